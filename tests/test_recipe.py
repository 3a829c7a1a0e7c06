"""The seed's recipe: its learning-rate rule on both training paths, random crops from the shards,
and training stopping with one line on a non-finite loss."""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf
from featurized import TINY

from model import dsp
from model import features as features_schema
from runtime.errors import run_command
from trainer import callbacks, crops, inputs, multiworker, musicnn_logs, schedule, task

# Validation losses on which the two rules part: improvements at epochs 3 and 6 reset plateau's
# counter but not the cumulative rule's, which keeps counting the non-improving epochs 2, 4, 5,
# 7, ... and halves at the validation after the one that brought its count to the patience.
LOSSES = [1.0, 1.1, 0.9, 1.2, 1.3, 0.8, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9]


def rule(name: str, patience: int = 3) -> schedule.Rule:
    return schedule.Rule(schedule=name, patience=patience, factor=0.5)


# --------------------------------------------------------------------------- learning rate


def test_cumulative_and_plateau_rules_halve_at_their_own_epochs():
    assert schedule.halving_epochs(LOSSES, rule("cumulative")) == [6, 10]
    assert schedule.halving_epochs(LOSSES, rule("plateau")) == [9, 12]
    # plateau needs a drop of more than 1e-4 to reset its counter; the seed's best model takes any drop
    creeping = [1.0, 0.99995, 0.99994, 0.99993, 0.99992]
    assert schedule.halving_epochs(creeping, rule("plateau", patience=2)) == [3, 5]
    assert schedule.halving_epochs(creeping, rule("cumulative", patience=2)) == []
    state = schedule.State()
    for epoch, loss in enumerate(creeping):
        schedule.advance(state, epoch, loss, rule("plateau", patience=2))
    assert (state.best, state.best_epoch) == (0.99992, 4)
    # a NaN validation loss is no improvement for either rule
    assert schedule.halving_epochs([1.0, math.nan, math.nan, math.nan], rule("cumulative", patience=2)) == [4]
    assert schedule.Rule(schedule="seed").schedule == "cumulative"  # the old name


@pytest.mark.slow  # downloads the musicnn wheel with pip (once per session)
@pytest.mark.parametrize("name", ["MTT_musicnn", "MTT_vgg", "MSD_vgg"])
def test_the_cumulative_rule_replays_musicnns_own_logs_to_the_epoch(musicnn_cache, name):
    """The wheel's logs of musicnn's runs: their validation losses through ``advance`` with
    patience 75 and factor 0.5 halve the learning rate after exactly the epochs where the log's
    own learning-rate column changes (MTT_musicnn: 94, 175, 259, 340, 416, 491, 566).
    MSD_musicnn's log is a resumed run that departs after epoch ~690: docs/training.md shows it."""
    log = musicnn_logs.read_log(musicnn_logs.log_path(name, musicnn_cache))
    changes = musicnn_logs.lr_change_epochs(log)
    assert len(changes) >= 7 and len(log["epoch"]) >= 600
    halvings = schedule.halving_epochs(log["val_cost"], schedule.Rule(schedule="cumulative", patience=75, factor=0.5))
    assert halvings == changes
    if name == "MTT_musicnn":
        assert changes == [94, 175, 259, 340, 416, 491, 566]


@pytest.mark.slow  # downloads the musicnn wheel with pip (once per session)
def test_a_runs_curves_are_drawn_over_musicnns_own_log(musicnn_cache, tmp_path, capsys):
    """The overlay PNG of the reproduction: a short synthetic history over the wheel's real MTT log,
    through the function and through the command that the reproduction runs."""
    from trainer import callbacks as callbacks_lib

    log = musicnn_logs.read_log(musicnn_logs.log_path("MTT_musicnn", musicnn_cache))
    assert log["epoch"][:2] == [1, 2] and log["learning_rate"][0] == 0.001 and math.isnan(log["train_cost"][0])
    assert 117 < musicnn_logs.median_epoch_seconds(log) < 119  # the seed's ~118 s per epoch on its GPU
    history = {"epoch": [0, 1, 2, 3], "val_loss": [0.30, 0.20, 0.18, 0.19], "learning_rate": [1e-3, 1e-3, 5e-4, 5e-4]}
    path = musicnn_logs.plot_against_log(history, log, str(tmp_path / "overlay.png"))
    data = pathlib.Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    job = tmp_path / "job"
    job.mkdir()
    history_log = callbacks_lib.HistoryLog(str(job / "history.json"))
    for epoch, (loss, rate) in enumerate(zip(history["val_loss"], history["learning_rate"])):
        history_log.on_epoch_begin(epoch)
        history_log.on_epoch_end(epoch, {"loss": loss + 0.01, "val_loss": loss, "learning_rate": rate})
    argv = [str(job), "--cache-dir", musicnn_cache]
    assert run_command("musicnn_logs", musicnn_logs.main, argv) == 0
    assert (job / musicnn_logs.OVERLAY_PNG).read_bytes()[:4] == b"\x89PNG"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_command("musicnn_logs", musicnn_logs.main, [str(empty), "--cache-dir", musicnn_cache]) == 2
    assert "has no epochs" in capsys.readouterr().err


def keras_path_lrs(state_dir, name: str, kill_after: int | None = None) -> list[float]:
    """The learning rate after each epoch under the Keras path's callback; with ``kill_after``, a
    second callback (a restarted process) takes over after that epoch with the same optimizer."""
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1.0), "mse")

    def callback():
        cb = callbacks.ResumableEarlyStopping(str(state_dir), patience=None, lr_rule=rule(name))
        cb.set_model(model)
        cb.on_train_begin()
        return cb

    cb, rates = callback(), []
    for epoch, loss in enumerate(LOSSES):
        cb.on_epoch_begin(epoch)
        logs = {"val_loss": loss}
        cb.on_epoch_end(epoch, logs)
        rates.append(logs["learning_rate"])
        if epoch == kill_after:
            cb = callback()
    return rates


def loop_path_lrs(name: str, checkpoint_dir, kill_after: int | None = None) -> list[float]:
    """The same under the multi-worker loop's :func:`multiworker.update_state`; with ``kill_after``,
    its LoopState is checkpointed then restored into a fresh one, as after a restart."""
    import keras

    args = type("Args", (), dict(lr_schedule=name, lr_plateau_patience=3, lr_plateau_factor=0.5))()
    args.early_stopping_patience = None
    optimizer = keras.optimizers.Adam(1.0)
    state, rates = multiworker.LoopState(), []
    for epoch, loss in enumerate(LOSSES):
        multiworker.update_state(state, epoch, loss, args, optimizer)
        rates.append(float(optimizer.learning_rate.numpy()))
        if epoch == kill_after:
            path = tf.train.Checkpoint(**state.trackables()).save(str(checkpoint_dir / "ckpt"))
            state = multiworker.LoopState()
            tf.train.Checkpoint(**state.trackables()).restore(path).assert_consumed()
    return rates


@pytest.mark.parametrize("name,halvings", [("cumulative", [6, 10]), ("plateau", [9, 12])])
def test_both_training_paths_take_the_rule_across_a_restart(tmp_path, name, halvings):
    expected = [0.5 ** sum(h <= epoch + 1 for h in halvings) for epoch in range(len(LOSSES))]
    assert keras_path_lrs(tmp_path / "a", name) == expected
    assert keras_path_lrs(tmp_path / "b", name, kill_after=6) == expected  # between two halvings of both
    assert loop_path_lrs(name, tmp_path) == expected
    assert loop_path_lrs(name, tmp_path, kill_after=6) == expected


def test_lr_schedule_flag_default_help_and_settings(tmp_path, capsys):
    base = ["--features", "f", "--frontend", "waveform", "--job-dir", str(tmp_path)]
    args = task.parse_args(base)
    assert args.lr_schedule == "cumulative" and args.epoch_patches == "random" and args.preset == "pons2018"
    assert task.run_settings(args, {})["lr_schedule"] == "cumulative"
    assert task.parse_args([*base, "--lr-schedule", "plateau", "--epoch-patches", "grid"]).lr_schedule == "plateau"
    assert capsys.readouterr().err == ""
    # the old spellings still work, each with one line on stderr
    old = task.parse_args([*base, "--lr-schedule", "seed", "--preset", "seed"])
    assert (old.lr_schedule, old.preset) == ("cumulative", "pons2018")
    notes = capsys.readouterr().err.splitlines()
    assert len(notes) == 2 and all("deprecated" in line for line in notes)
    with pytest.raises(SystemExit):
        task.parse_args([*base, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--lr-schedule {cumulative,plateau}" in text and "ReduceLROnPlateau" in text
    assert "--preset {musicnn,pons2018}" in text
    assert "--epoch-patches {random,grid,all}" in text


# ------------------------------------------------------------------------------ the shards


@pytest.fixture(scope="module")
def long_tracks(tmp_path_factory) -> pathlib.Path:
    """Features of 20 synthetic tracks of 10 s (3 patches each)."""
    from infra.demo import catalog as demo_catalog
    from pipelines import featurize

    root = tmp_path_factory.mktemp("recipe")
    catalog = demo_catalog.make_demo_catalog(str(root / "catalog"), n_tracks=20, seed=3, duration_s=10.0)
    featurize.run(
        [
            "--catalog",
            catalog,
            "--output",
            str(root / "features"),
            "--valid-fraction",
            "0.25",
            "--test-fraction",
            "0.25",
        ]
    )
    return root / "features"


def track_signals(features, frontend: str) -> dict:
    """``{track_id: (n, ...) patches in order}`` of the training split."""
    patches: dict[bytes, dict[int, np.ndarray]] = {}
    for batch in inputs.make_dataset(features, "train", frontend, batch_size=16, with_ids=True):
        for track, index, signal in zip(batch["track_id"].numpy(), batch["patch_index"].numpy(), batch["inputs"]):
            patches.setdefault(track, {})[int(index)] = signal.numpy()
    return {track: np.stack([p[i] for i in sorted(p)]) for track, p in patches.items()}


def track_tails(features, kind: str) -> dict:
    """``{track_id: the tail's frames (r, 96) or samples (r * 256,)}`` of the training split, as stored."""
    spec = {"track_id": tf.io.FixedLenFeature([], tf.string), **features_schema.tail_feature_spec(kind)}
    name = features_schema.TAIL_FEATURE[kind]
    tails = {}
    for path in inputs.split_shard_paths(features.path, kind, "train", features.metadata):
        for record in tf.data.TFRecordDataset(path):
            parsed = tf.io.parse_single_example(record, spec)
            raw = parsed[name].numpy()
            if raw:  # the last patch of a track
                signal = np.frombuffer(raw, "<f4").reshape(-1, dsp.N_MELS) if kind == "mel" else None
                if kind == "waveform":
                    signal = np.frombuffer(raw, "<i2").astype(np.float32) / features_schema.WAVEFORM_SCALE
                tails[parsed["track_id"].numpy()] = signal
    return tails


def epoch_crops(features, frontend: str, frames: dict, epoch: int) -> dict:
    variable = tf.Variable(epoch, dtype=tf.int64)
    cropped = crops.crop_dataset(features, frontend, frames, variable, seed=0, batch_size=4, with_offsets=True)
    assert cropped.cardinality().numpy() == -(-len(frames) // 4)
    out = {}
    for batch in cropped:
        for track, offset, signal in zip(batch["track_id"].numpy(), batch["offset"].numpy(), batch["inputs"]):
            assert track not in out  # one crop per track
            out[track] = (int(offset), signal.numpy())
    return out


@pytest.mark.slow
def test_featurize_keeps_the_tail_and_crops_reach_the_last_frame_with_mel_and_waveform_aligned(long_tracks):
    features = inputs.open_features(str(long_tracks))
    frames = crops.track_frames(features, "train")
    # 10 s at 16 kHz: 1 + 160000 // 256 = 626 frames, 3 whole patches (561) and a tail of 65
    assert len(frames) >= 4 and set(frames.values()) == {626}
    mels, waves = track_signals(features, "spectrogram"), track_signals(features, "waveform")
    mel_tails, wave_tails = track_tails(features, "mel"), track_tails(features, "waveform")
    assert {len(t) for t in mel_tails.values()} == {65} and {len(t) for t in wave_tails.values()} == {65 * 256}
    whole_mel = {track: np.concatenate([mels[track].reshape(-1, dsp.N_MELS), mel_tails[track]]) for track in frames}
    whole_wave = {  # the padded track's samples: every patch's new samples, the last patch, the tail
        track: np.concatenate([waves[track][:-1, : dsp.PATCH_HOP_SAMPLES].ravel(), waves[track][-1], wave_tails[track]])
        for track in frames
    }
    # the tail is the track's end: the last 187 stored frames are an affine map per band (the
    # standardisation) of the log-mel of the last 48,128 stored samples, as for any patch
    track = sorted(frames)[0]
    computed = dsp.log_mel_patches(tf.constant(waves[track])).numpy()
    scale = mels[track][0].std(axis=0) / computed[0].std(axis=0)
    shift = mels[track][0].mean(axis=0) - computed[0].mean(axis=0) * scale
    last = dsp.log_mel_patches(whole_wave[track][None, -dsp.PATCH_SAMPLES :]).numpy()[0] * scale + shift
    error = np.abs(last - whole_mel[track][-dsp.PATCH_FRAMES :]).max()
    assert error < 1e-5, error  # float32 rounding: 1.4e-6 measured (default, TF_ENABLE_ONEDNN_OPTS=0, AVX2)
    one_off = dsp.log_mel_patches(whole_wave[track][None, -dsp.PATCH_SAMPLES - 256 : -256]).numpy()[0]
    assert np.abs(one_off * scale + shift - whole_mel[track][-dsp.PATCH_FRAMES :]).max() > 1.0  # a frame off is far

    offsets = {}
    for epoch in range(3):
        mel_crops, wave_crops = (
            epoch_crops(features, "spectrogram", frames, epoch),
            epoch_crops(features, "waveform", frames, epoch),
        )
        assert set(mel_crops) == set(wave_crops) == set(frames)
        for track, (offset, mel) in mel_crops.items():
            assert wave_crops[track][0] == offset and 0 <= offset <= 626 - 187  # one draw, both kinds
            offsets[(epoch, track)] = offset
            np.testing.assert_array_equal(mel, whole_mel[track][offset : offset + dsp.PATCH_FRAMES])
            start = offset * dsp.HOP_LENGTH
            np.testing.assert_array_equal(wave_crops[track][1], whole_wave[track][start : start + dsp.PATCH_SAMPLES])
    per_track = {track: {offsets[(e, track)] for e in range(3)} for track in frames}
    assert sum(len(values) > 1 for values in per_track.values()) >= len(frames) - 1  # crops change between epochs
    assert any(offset > 2 * dsp.PATCH_FRAMES for offset in offsets.values())  # some reach into the tail


@pytest.mark.slow
def test_no_standardise_trains_and_serves_on_the_raw_log_mel(long_tracks, tmp_path):
    from model import export

    features = inputs.open_features(str(long_tracks), need_transform=True)
    raw = dataclasses.replace(features, band_stats=inputs.band_statistics(features))
    waves, stored, unstandardised = (
        track_signals(features, "waveform"),
        track_signals(features, "spectrogram"),
        track_signals(raw, "spectrogram"),
    )
    track = sorted(waves)[0]
    computed = dsp.log_mel_patches(tf.constant(waves[track])).numpy()  # from the int16 PCM the shards keep
    error = np.abs(unstandardised[track] - computed).max()
    # the demo audio is 16-bit already, so the int16 shards lose nothing: float32 rounding alone
    assert error < 1e-5, error  # measured 9.5e-7
    assert np.abs(stored[track] - computed).max() > 1.0  # the stored log-mel is standardised (5.0 measured)

    job = tmp_path / "job"
    argv = ["--features", str(long_tracks), "--frontend", "spectrogram", "--job-dir", str(job), *TINY]
    result = task.train_and_evaluate(task.parse_args([*argv, "--epochs", "1", "--no-standardise"]))
    assert result.evaluation["settings"]["standardise"] is False
    served = export.load_serving_model(str(job / "export"))
    assert served.info["input_normalisation"].startswith("none (raw log-mel")
    scores = served.predict(waves[track])["scores"]
    direct = result.model(tf.constant(unstandardised[track]), training=False)["scores"].numpy()
    np.testing.assert_allclose(scores, direct, atol=1e-5)  # 1.8e-7 measured


# ------------------------------------------------------------------------- non-finite loss


def poison_one_training_example(src: pathlib.Path, dst: pathlib.Path) -> None:
    """Copy a features folder and write NaN into the log-mel of one training example."""
    shutil.copytree(src, dst)
    metadata = json.loads((dst / "metadata.json").read_text())
    path = dst / metadata["files"]["mel"]["train"][0]
    records = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]
    track = records[0].features.feature["track_id"].bytes_list.value[0]
    for record in records:  # every patch of one track, so whichever crop an epoch draws holds NaN
        if record.features.feature["track_id"].bytes_list.value[0] == track:
            feature = record.features.feature["log_mel"].bytes_list
            values = np.frombuffer(feature.value[0], "<f4").copy()
            values[::7] = np.nan
            feature.value[0] = values.tobytes()
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record.SerializeToString())


@pytest.mark.slow
def test_training_on_a_nan_example_stops_with_one_line(long_tracks, tmp_path, capsys):
    poisoned = tmp_path / "features"
    poison_one_training_example(long_tracks, poisoned)
    argv = ["--features", str(poisoned), "--frontend", "spectrogram", "--job-dir", str(tmp_path / "job")]
    argv += [*TINY, "--epochs", "2", "--no-export"]
    assert run_command("train", task.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tagscale train: error: the "), err
    assert "loss is nan in epoch 1: the train or valid shards hold non-finite values" in err[0]
    assert not (tmp_path / "job" / "eval.json").exists()
    assert not (tmp_path / "job" / "history.json").exists()  # the poisoned epoch is not logged as done


def test_the_loop_s_guard_stops_on_a_non_finite_loss():
    schedule.check_finite(0, {"loss": 0.5, "val_loss": 0.7})
    with pytest.raises(schedule.NonFiniteLoss, match="validation loss is inf in epoch 3"):
        schedule.check_finite(2, {"loss": 0.5, "val_loss": math.inf})


@pytest.mark.slow
def test_the_multi_worker_loop_stops_on_a_nan_example(long_tracks, tmp_path):
    """The loop of :mod:`trainer.multiworker` (here under the default strategy, one process)."""
    from trainer import build, recipe

    poisoned = tmp_path / "features"
    poison_one_training_example(long_tracks, poisoned)
    argv = ["--features", str(poisoned), "--frontend", "spectrogram", "--job-dir", str(tmp_path / "job")]
    args = task.parse_args([*argv, *TINY, "--epochs", "2", "--no-export"])
    features = inputs.open_features(str(poisoned))
    train_data, examples, input_callbacks = recipe.training_data(
        args, features, "spectrogram", inputs.count_split(features, "train")
    )
    valid_data = inputs.make_dataset(features, "valid", "spectrogram", batch_size=args.batch_size)
    strategy = tf.distribute.get_strategy()
    model, _ = build.build_for_run(args, "spectrogram", features.n_tags, {}, compile=False)
    with pytest.raises(schedule.NonFiniteLoss, match="loss is nan in epoch 1"):
        multiworker.fit(
            strategy,
            model,
            args,
            train_data,
            valid_data,
            job_dir=str(tmp_path / "job"),
            label="nan",
            n_tags=features.n_tags,
            epoch_examples=examples,
            epoch_counter=input_callbacks[0],
            mixed=False,
        )
    assert not (tmp_path / "job" / "history.json").exists()
