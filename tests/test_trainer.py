"""trainer: inputs from real featurized demo shards, metrics, resume after SIGKILL, eval.json, export."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import shutil
import signal as signals
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from featurized import TINY_NETWORK, train_args

from model import dsp, export
from trainer import callbacks, inputs, metrics, task

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = [*TINY_NETWORK, "--batch-size", "16"]


@pytest.fixture(scope="module")
def features_dir(demo_features) -> pathlib.Path:
    return demo_features


@pytest.fixture(scope="module")
def catalog_tags(features_dir) -> dict:
    with open(features_dir.parent / "catalog" / "catalog.csv") as handle:
        return {row["track_id"]: set(filter(None, row["tags"].split(";"))) for row in csv.DictReader(handle)}


# ------------------------------------------------------------------------------- inputs


@pytest.mark.slow
@pytest.mark.parametrize(
    "frontend,shape", [("waveform", (dsp.PATCH_SAMPLES,)), ("spectrogram", (dsp.PATCH_FRAMES, dsp.N_MELS))]
)
def test_dataset_shapes_and_labels_match_the_catalog(features_dir, catalog_tags, frontend, shape):
    features = inputs.open_features(str(features_dir))
    assert features.top_k == 16 and features.n_tags == 11  # labels are sliced from top_k to the vocabulary
    dataset = inputs.make_dataset(features, "valid", frontend, batch_size=16, with_ids=True)
    seen = 0
    for batch in dataset:
        assert batch["inputs"].shape[1:] == shape and batch["inputs"].dtype == tf.float32
        assert batch["labels"].shape[1:] == (features.n_tags,)
        for track_id, labels in zip(batch["track_id"].numpy(), batch["labels"].numpy()):
            expected = catalog_tags[track_id.decode()]
            assert {tag for tag, on in zip(features.tags, labels) if on == 1.0} == expected & set(features.tags)
        seen += len(batch["labels"])
    assert seen == features.split_examples("valid")
    if frontend == "spectrogram":  # already normalised by the training statistics
        x = next(iter(inputs.make_dataset(features, "train", frontend, batch_size=256)))[0].numpy()
        assert abs(x.mean()) < 0.2 and 0.7 < x.std() < 1.3
    train = inputs.make_dataset(
        features, "train", frontend, batch_size=16, training=True, n_examples=features.split_examples("train")
    )
    x, y = next(iter(train))
    assert x.shape == (16, *shape) and y.shape == (16, features.n_tags)
    assert int(train.cardinality()) == -(-features.split_examples("train") // 16)


@pytest.mark.slow
def test_fraction_is_deterministic_nested_and_counted(features_dir):
    features = inputs.open_features(str(features_dir))

    def ids(fraction):
        dataset = inputs.make_dataset(features, "train", "spectrogram", batch_size=64, fraction=fraction, with_ids=True)
        return [t.decode() for batch in dataset for t in batch["track_id"].numpy()]

    small, large = ids(0.3), ids(0.6)
    assert set(small) < set(large) and small == ids(0.3)
    total = features.split_examples("train")
    assert abs(len(small) / total - 0.3) < 0.1 and abs(len(large) / total - 0.6) < 0.1
    assert inputs.count_split(features, "train", fraction=0.3) == {"tracks": len(set(small)), "examples": len(small)}
    assert inputs.count_split(features, "train") == {"tracks": features.split_tracks("train"), "examples": total}
    # the same choice in eager code (any machine: FarmHash fingerprint, not Python's salted hash)
    assert list(inputs.keep_track(tf.constant(["a", "b"]), 1.0).numpy()) == [True, True]


@pytest.mark.slow
def test_malformed_features_dirs_name_what_is_missing(features_dir, tmp_path):
    with pytest.raises(inputs.FeaturesDirError, match="does not exist"):
        inputs.open_features(str(tmp_path / "nowhere"))
    broken = tmp_path / "features"
    broken.mkdir()
    with pytest.raises(inputs.FeaturesDirError, match="missing metadata.json"):
        inputs.open_features(str(broken))
    shutil.copy(features_dir / "metadata.json", broken / "metadata.json")
    with pytest.raises(inputs.FeaturesDirError, match=r"missing mel/train-\*\.tfrecord"):
        inputs.open_features(str(broken), ["spectrogram"])
    shutil.copytree(features_dir / "mel", broken / "mel")
    inputs.open_features(str(broken), ["spectrogram"])
    with pytest.raises(inputs.FeaturesDirError, match="missing waveform/train"):
        inputs.open_features(str(broken), ["waveform"])
    with pytest.raises(inputs.FeaturesDirError, match="missing transform_fn/"):
        inputs.open_features(str(broken), ["spectrogram"], need_transform=True)
    # the command turns it into a one-line user error (exit 2)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "infra.cli",
            "train",
            "--features",
            str(broken),
            "--frontend",
            "waveform",
            "--job-dir",
            str(tmp_path / "job"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error:" in result.stderr and "missing waveform/train-*.tfrecord" in result.stderr


# ------------------------------------------------------------------------------ metrics


def pairwise_roc_auc(y, s) -> float:
    """The definition: P(score of a random positive > a random negative), ties count half."""
    pos, neg = s[y == 1], s[y == 0]
    return float(
        ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    )


def stepwise_average_precision(y, s) -> float:
    """Precision at every distinct threshold, weighted by the recall it adds."""
    total, area, previous_recall = y.sum(), 0.0, 0.0
    for threshold in np.unique(s)[::-1]:
        chosen = s >= threshold
        recall = (y[chosen] == 1).sum() / total
        area += (recall - previous_recall) * (y[chosen] == 1).mean()
        previous_recall = recall
    return float(area)


def test_auc_metrics_match_their_definitions():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(5, 60))
        y = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(int)
        if y.min() == y.max():
            y[0] = 1 - y[0]
        s = np.round(rng.random(n) + 0.4 * y, 1)  # rounded: many ties
        assert metrics.roc_auc(y, s) == pytest.approx(pairwise_roc_auc(y, s), abs=1e-12)
        assert metrics.average_precision(y, s) == pytest.approx(stepwise_average_precision(y, s), abs=1e-12)
    assert np.isnan(metrics.roc_auc([1, 1], [0.2, 0.3])) and np.isnan(metrics.average_precision([0, 0], [0.2, 0.3]))
    ids, labels, scores = metrics.track_scores(
        [b"b", b"a", b"b"], [[1, 0], [0, 1], [1, 0]], [[0.2, 0.4], [0.9, 0.1], [0.4, 0.0]]
    )
    assert ids == ["a", "b"] and labels.tolist() == [[0, 1], [1, 0]]
    assert np.allclose(scores, [[0.9, 0.1], [0.3, 0.2]])
    report = metrics.tag_report(
        np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1]]),
        np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.5], [0.4, 0.2, 0.5]]),
        ["x", "y", "z"],
    )
    assert report["excluded_tags"] == ["y", "z"] and report["roc_auc"] == 1.0 and report["evaluated_tags"] == 1


def test_auc_metrics_equal_scikit_learn_on_random_data():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(1)
    for trial in range(30):
        n = int(rng.integers(4, 300))
        y = (rng.random(n) < rng.uniform(0.05, 0.95)).astype(int)
        if y.min() == y.max():
            y[:2] = [0, 1]
        s = rng.random(n) if trial % 2 else np.round(rng.random(n), 1)  # every other trial: ties
        assert metrics.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert metrics.average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_recipe_init_weight_decay_and_float32_scores_under_mixed_precision():
    import keras

    from model import network
    from trainer import recipe

    keras.utils.set_random_seed(0)
    model = network.build_model("spectrogram", 5, "pons2018", **{"backend_filters": 8, "dense_units": 16})
    dense = model.get_layer("backend_dense").kernel
    recipe.initialise(model, "variance-scaling", seed=0)
    fan_in = dense.shape[0]
    # He (truncated normal, scale 2): std close to sqrt(2 / fan_in), Glorot's would be sqrt(2 / (fan_in + fan_out))
    assert float(np.std(dense.numpy())) == pytest.approx(np.sqrt(2.0 / fan_in), rel=0.1)
    assert len(recipe.kernels(model)) == sum(1 for layer in model.layers if hasattr(layer, "kernel"))
    recipe.add_weight_decay(model, 1e-5)
    expected = 1e-5 / 2 * sum(float(np.sum(k.numpy() ** 2)) for k in recipe.kernels(model))  # the seed's tf.nn.l2_loss
    assert float(sum(keras.ops.convert_to_numpy(loss) for loss in model.losses)) == pytest.approx(expected, rel=1e-4)

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = network.build_model("spectrogram", 5, "pons2018", **{"backend_filters": 8, "dense_units": 16})
        out = mixed(np.zeros((2, 187, 96), np.float32), training=False)
        assert out["scores"].dtype == tf.float32 and out["embedding"].dtype == tf.float16
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_recipe_flags_defaults_and_errors(tmp_path):
    args = task.parse_args(["--features", "f", "--frontend", "waveform", "--job-dir", str(tmp_path)])
    assert (args.weight_decay, args.lr_plateau_patience, args.lr_plateau_factor) == (1e-5, 75, 0.5)
    assert (args.epoch_patches, args.init, args.early_stopping_patience) == ("random", "variance-scaling", None)
    settings = task.run_settings(args, {})
    for key in (
        "weight_decay",
        "lr_plateau_patience",
        "lr_plateau_factor",
        "epoch_patches",
        "init",
        "early_stopping_patience",
        "optimizer",
    ):
        assert key in settings
    for bad in (
        ["--lr-plateau-factor", "1.5"],
        ["--weight-decay", "-1"],
        ["--early-stopping-patience", "0"],
        ["--init", "zeros"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            task.parse_args(["--features", "f", "--frontend", "waveform", "--job-dir", str(tmp_path), *bad])
        assert exit_info.value.code == 2


def test_early_stopping_state_survives_a_restart(tmp_path):
    """Feed the same validation losses to one uninterrupted callback and to two 'processes'."""
    import keras

    losses = [1.0, 0.8, 0.9, 0.85, 0.7, 0.75, 0.74, 0.9, 0.9]

    def model():
        m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        m.compile("adam", "mse")
        return m

    def run(state_dir, epochs, stop_after=None):
        m = model()
        cb = callbacks.ResumableEarlyStopping(str(state_dir), patience=3)
        cb.set_model(m)
        cb.on_train_begin()
        for epoch in epochs:
            cb.on_epoch_begin(epoch)
            m.layers[0].kernel.assign(np.full((2, 1), float(epoch), np.float32))  # weights that name their epoch
            cb.on_epoch_end(epoch, {"val_loss": losses[epoch]})
            if m.stop_training or epoch == stop_after:
                break
        return cb, m, epoch

    straight, straight_model, straight_last = run(tmp_path / "a", range(len(losses)))
    run(tmp_path / "b", range(len(losses)), stop_after=4)  # "killed" after epoch 4 (no on_train_end)
    resumed, resumed_model, resumed_last = run(tmp_path / "b", range(5, len(losses)))
    assert (
        (resumed_last, resumed.best_epoch, resumed.wait)
        == (straight_last, straight.best_epoch, straight.wait)
        == (7, 4, 3)
    )
    resumed.on_train_end()
    straight.on_train_end()
    assert (
        float(resumed_model.layers[0].kernel.numpy()[0, 0])
        == float(straight_model.layers[0].kernel.numpy()[0, 0])
        == 4.0
    )
    assert not (tmp_path / "b").exists()  # state removed once training ended


# ----------------------------------------------------------------------- train end to end


@pytest.mark.slow
def test_random_patch_epochs_train_on_tracks_of_several_patches(tmp_path):
    """The default recipe (one random crop per track per epoch) on tracks longer than one patch."""
    from infra.demo import catalog as demo_catalog
    from pipelines import featurize
    from trainer import recipe

    catalog = demo_catalog.make_demo_catalog(str(tmp_path / "catalog"), n_tracks=30, seed=2, duration_s=7.0)
    features_path = tmp_path / "features"
    featurize.run(
        ["--catalog", catalog, "--output", str(features_path), "--valid-fraction", "0.2", "--test-fraction", "0.2"]
    )
    features = inputs.open_features(str(features_path))
    patches = inputs.track_patches(features, "train")
    assert min(patches.values()) >= 2 and sum(patches.values()) == features.split_examples("train")

    args = train_args(features_path, tmp_path / "job", "spectrogram", "--epochs", "1", "--epoch-patches", "random")
    data, epoch_examples, input_callbacks = recipe.training_data(
        args, features, "spectrogram", inputs.count_split(features, "train")
    )
    examples = sum(int(labels.shape[0]) for _, labels in data)
    assert epoch_examples == len(patches) == examples and len(input_callbacks) == 1  # one patch per track
    evaluation = task.train_and_evaluate(args).evaluation
    assert evaluation["epochs_trained"] == 1 and evaluation["train"]["tracks"] == len(patches)


@pytest.mark.slow
def test_the_input_pipeline_has_no_autotuned_stage(features_dir):
    """Autotuned stages made Keras wait seconds at each epoch's end beside another training process."""
    features = inputs.open_features(str(features_dir))
    dataset = inputs.make_dataset(features, "train", "waveform", batch_size=16, training=True)
    graph = tf.compat.v1.GraphDef.FromString(dataset._as_serialized_graph().numpy())
    consts = {node.name: node for node in graph.node if node.op == "Const"}

    def value(node, position):
        const = consts[node.input[position].split(":")[0]]
        return int(tf.make_ndarray(const.attr["value"].tensor))

    stages = {node.op: node for node in graph.node}
    assert value(stages["ParallelMapDatasetV2"], 1) == inputs.parse_calls() >= 1
    assert value(stages["PrefetchDataset"], 1) == inputs.PREFETCH_BATCHES
    assert dataset.options().autotune.enabled is False


@pytest.mark.slow
def test_train_and_evaluate_writes_eval_and_a_self_contained_export(features_dir, tmp_path):
    copy = tmp_path / "features_copy"
    shutil.copytree(features_dir, copy)
    job = tmp_path / "job"
    result = task.train_and_evaluate(
        train_args(copy, job, "spectrogram", "--epochs", "2", "--fraction", "0.5", "--learning-rate", "3e-3")
    )
    evaluation = json.loads((job / "eval.json").read_text())
    features = inputs.open_features(str(copy))
    assert evaluation["frontend"] == "spectrogram" and evaluation["epochs_trained"] == 2
    assert evaluation["params"] == result.model.count_params() > 0
    assert evaluation["train"] == inputs.count_split(features, "train", fraction=0.5)
    assert evaluation["test"] == {"tracks": features.split_tracks("test"), "examples": features.split_examples("test")}
    assert evaluation["train_time_s"] > 0 and set(evaluation["per_tag"]) == set(features.tags)
    assert evaluation["evaluated_tags"] + len(evaluation["excluded_tags"]) == features.n_tags
    assert (job / "model.keras").exists() and list((job / "tensorboard" / "validation").iterdir())
    assert not (job / "backup").exists() and not (job / "checkpoints").exists()  # removed when training ended

    # The macro ROC-AUC, recomputed here from the model's scores on the test shards. The scores
    # come in the evaluation's batches: oneDNN picks its kernels by batch size, so other batches
    # change the scores' last bits, and with near-tied scores (an undertrained model) that
    # reorders tracks and moves the ROC-AUC by ~3e-4.
    batch_size = evaluation["settings"]["batch_size"]
    patches = task.predict_patches(
        result.model, inputs.make_dataset(features, "test", "spectrogram", batch_size=batch_size, with_ids=True)
    )
    scored = {
        (t.decode(), int(i)): s for t, i, s in zip(patches["track_id"], patches["patch_index"], patches["scores"])
    }
    mel = {}
    for batch in inputs.make_dataset(features, "test", "spectrogram", batch_size=64, with_ids=True):
        eager = result.model(batch["inputs"], training=False)["scores"].numpy()
        for track, index, labels, scores, mels in zip(
            batch["track_id"].numpy(),
            batch["patch_index"].numpy(),
            batch["labels"].numpy(),
            eager,
            batch["inputs"].numpy(),
        ):
            key = (track.decode(), int(index))
            # other batches, eager: the same scores up to float32 rounding, at most 2.4e-7 measured
            # on AVX-512 with oneDNN, with ONEDNN_MAX_CPU_ISA=AVX2 and with TF_ENABLE_ONEDNN_OPTS=0
            np.testing.assert_allclose(scores, scored[key], rtol=0, atol=1e-6)
            mel[key] = (labels, scored[key], mels)
    tracks = sorted({track for track, _ in mel})
    track_labels = np.array([next(v[0] for k, v in mel.items() if k[0] == t) for t in tracks])
    track_scores = np.array([np.mean([v[1] for k, v in mel.items() if k[0] == t], axis=0) for t in tracks])
    direct = {
        tag: pairwise_roc_auc(track_labels[:, i], track_scores[:, i])
        for i, tag in enumerate(features.tags)
        if 0 < track_labels[:, i].sum() < len(tracks)
    }
    assert sorted(set(features.tags) - set(direct)) == sorted(evaluation["excluded_tags"])
    assert evaluation["roc_auc"] == pytest.approx(np.mean(list(direct.values())), abs=1e-9)
    for tag, value in direct.items():
        assert evaluation["per_tag"][tag]["roc_auc"] == pytest.approx(value, abs=1e-9)

    # The export needs nothing of the features directory: delete all of it, then serve raw waveforms.
    waveforms = {}
    for batch in inputs.make_dataset(features, "test", "waveform", batch_size=64, with_ids=True):
        for track, index, wave in zip(batch["track_id"].numpy(), batch["patch_index"].numpy(), batch["inputs"].numpy()):
            waveforms[(track.decode(), int(index))] = wave
    shutil.rmtree(copy / "transform_fn")
    shutil.rmtree(copy)
    served = export.load_serving_model(str(job / "export"))
    keys = sorted(mel)
    outputs = served.predict(np.stack([waveforms[k] for k in keys]))
    assert served.tags == features.tags and served.info["frontend"] == "spectrogram"
    # ... and says what it came from: the features (path) and the recipe (eval.json's settings)
    assert served.info["features_dir"] == features.path and served.info["recipe"] == evaluation["settings"]
    # The shards keep the waveform as int16 PCM (81 dB SNR at -20 dBFS) while the log-mel shards
    # were computed from the float audio, so the served outputs differ by quantisation alone:
    # scores by up to 3.5e-4 measured here, embeddings (values up to ~10) by 4.4e-4 relative.
    np.testing.assert_allclose(outputs["scores"], np.stack([mel[k][1] for k in keys]), atol=1e-3)
    embedding = result.model(np.stack([mel[k][2] for k in keys]), training=False)["embedding"].numpy()
    np.testing.assert_allclose(outputs["embedding"], embedding, rtol=1e-3, atol=1e-3)  # 4.4e-4 relative measured


def _backed_up_epochs(path: pathlib.Path) -> int:
    try:
        return int(json.loads(path.read_text()).get("epoch", 0))
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return 0


def _epoch_lines(text: str) -> list[int]:
    return [int(line.split()[1].split("/")[0]) for line in text.splitlines() if line.startswith("Epoch ")]


@pytest.mark.slow
def test_resume_after_sigkill_finishes_with_the_same_epochs(features_dir, tmp_path):
    flags = ["--features", str(features_dir), "--frontend", "waveform", *TINY, "--epochs", "4", "--fraction", "0.5"]
    # Uninterrupted, in process; its waveform export serves what the model scores on the shards.
    straight = task.train_and_evaluate(
        task.parse_args([*flags, "--job-dir", str(tmp_path / "straight"), "--verbose", "0"])
    )
    assert straight.evaluation["epochs_trained"] == 4
    features = inputs.open_features(str(features_dir))
    batch = next(iter(inputs.make_dataset(features, "test", "waveform", batch_size=8)))[0].numpy()
    served = export.load_serving_model(straight.export_dir)
    np.testing.assert_allclose(
        served.predict(batch)["scores"], straight.model(batch, training=False)["scores"].numpy(), atol=1e-5
    )

    # Killed with SIGKILL after its second epoch, then started again with the same job dir.
    job = tmp_path / "killed"
    command = [sys.executable, "-m", "trainer.task", *flags, "--job-dir", str(job), "--verbose", "2"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metadata = job / "backup" / "training_metadata.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if _backed_up_epochs(metadata) >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, "training finished before it could be killed:\n" + process.stdout.read()[-3000:]
    process.send_signal(signals.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signals.SIGKILL
    assert not (job / "eval.json").exists()
    done_before = len(callbacks.read_history(str(job / "history.json"))["epoch"])
    assert done_before >= 2

    rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert _epoch_lines(rerun.stdout)[0] >= 3  # resumed: did not start again at epoch 1
    evaluation = json.loads((job / "eval.json").read_text())
    assert evaluation["epochs_trained"] == straight.evaluation["epochs_trained"] == 4
    assert callbacks.read_history(str(job / "history.json"))["epoch"] == [0, 1, 2, 3]
    assert not (job / "backup").exists()
