"""Pretrained musicnn models: fetch, weight mapping, CLI, and parity with musicnn's own graph.

The models are fetched once per session (``pip download musicnn==0.1.0``: PyPI must be
reachable) into a pytest temp dir. The reference is the wheel's own TF 1 ``.meta`` graph,
imported in graph mode and restored from its checkpoint.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.musicnn_reference import MusicnnGraph, musicnn_log_mel_patches
from infra import pretrained as pretrained_cmd
from model import dsp, export, musicnn_checkpoint, pretrained
from runtime.errors import TagscaleError

REPO = pathlib.Path(__file__).resolve().parents[1]
MIN_TOP1_SECONDS = 3.0  # musicnn cannot tag a track shorter than one 187-frame patch


@pytest.fixture(scope="session")
def cache_dir(pretrained_cache) -> str:
    return pretrained_cache


@pytest.fixture(scope="session")
def package_dir(cache_dir) -> str:
    return os.path.join(cache_dir, "musicnn-0.1.0", "musicnn")


@pytest.fixture(scope="session")
def reference_graphs(package_dir):
    graphs = {
        name: MusicnnGraph(pretrained.checkpoint_prefix(package_dir, spec)) for name, spec in pretrained.MODELS.items()
    }
    yield graphs
    for graph in graphs.values():
        graph.session.close()


@pytest.fixture(scope="session")
def serving_models(cache_dir):
    return {name: export.load_serving_model(pretrained.resolve_model(name, cache_dir)) for name in pretrained.MODELS}


def tagscale_scores(path, model: export.ServingModel) -> np.ndarray:
    """The project's path: decode -> waveform patches -> serving model -> mean over patches."""
    from pipelines.decode.audio import decode_audio

    patches = dsp.patch_waveform(decode_audio(str(path)).samples)
    return model.predict(patches)["scores"].mean(axis=0)


def top(scores: np.ndarray, tags: list[str], k: int) -> list[str]:
    return [tags[i] for i in np.argsort(-scores, kind="stable")[:k]]


# -----------------------------------------------------------------------------
# fetch, mapping, cache, CLI


def test_fetch_writes_both_serving_models(cache_dir):
    for name, spec in pretrained.MODELS.items():
        path = pretrained.resolve_model(name, cache_dir)
        assert path == os.path.join(cache_dir, "models", name)
        tags, info = export.read_model_info(path)
        assert len(tags) == 50 and len(set(tags)) == 50
        assert {k: info[k] for k in ("name", "frontend", "preset", "source", "dataset")} == {
            "name": name,
            "frontend": "spectrogram",
            "preset": "musicnn",
            "source": "musicnn 0.1.0 (ISC licence)",
            "dataset": spec.dataset,
        }
    mtt, _ = export.read_model_info(pretrained.model_dir("musicnn-mtt", cache_dir))
    msd, _ = export.read_model_info(pretrained.model_dir("musicnn-msd", cache_dir))
    assert mtt[:3] == ["guitar", "classical", "slow"] and msd[:3] == ["rock", "pop", "alternative"]


def test_checkpoint_maps_every_variable(package_dir):
    from model import network

    for spec in pretrained.MODELS.values():
        model = network.build_model("spectrogram", 50, preset="musicnn")
        report = musicnn_checkpoint.load_musicnn_weights(model, pretrained.checkpoint_prefix(package_dir, spec))
        # 66 non-slot checkpoint variables (792,081 values) = 64 model weights + Adam's 2 powers.
        assert report["assigned"] == 64 == len(model.weights)
        assert report["weights"] == 792_079 == model.count_params()
        slots = [name for name in report["skipped"] if name.endswith(("/Adam", "/Adam_1"))]
        assert sorted(set(report["skipped"]) - set(slots)) == ["beta1_power", "beta2_power"]
        assert len(slots) == 2 * 42  # Adam's two slots per trainable variable


def test_mapping_fails_loudly_on_unmapped_weights(package_dir, monkeypatch):
    from model import network

    scopes = dict(musicnn_checkpoint.CHECKPOINT_SCOPES)
    del scopes["temporal_1_bn"]
    monkeypatch.setattr(musicnn_checkpoint, "CHECKPOINT_SCOPES", scopes)
    model = network.build_model("spectrogram", 50, preset="musicnn")
    prefix = pretrained.checkpoint_prefix(package_dir, pretrained.MODELS["musicnn-mtt"])
    with pytest.raises(musicnn_checkpoint.CheckpointMappingError) as caught:
        musicnn_checkpoint.load_musicnn_weights(model, prefix)
    assert "temporal_1_bn/moving_mean has no checkpoint variable" in str(caught.value)
    assert "batch_normalization_4/moving_variance [51] is not used" in str(caught.value)
    monkeypatch.undo()
    with pytest.raises(musicnn_checkpoint.CheckpointMappingError, match="shape"):
        musicnn_checkpoint.load_musicnn_weights(
            network.build_model("spectrogram", 50, "musicnn", dense_units=100), prefix
        )


def test_resolve_model(cache_dir, tmp_path):
    some_dir = tmp_path / "my_model"
    some_dir.mkdir()
    assert pretrained.resolve_model(str(some_dir), cache_dir) == str(some_dir)
    assert pretrained.resolve_model("gs://bucket/models/m1") == "gs://bucket/models/m1"
    with pytest.raises(TagscaleError, match=r"model musicnn-mtt is not fetched; run `tagscale pretrained fetch`"):
        pretrained.resolve_model("musicnn-mtt", str(tmp_path / "empty_cache"))
    with pytest.raises(TagscaleError, match="unknown model 'musicnn-xyz'"):
        pretrained.resolve_model("musicnn-xyz", cache_dir)


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("TAGSCALE_CACHE", str(tmp_path / "from_env"))
    assert pretrained.cache_root() == str(tmp_path / "from_env")
    assert pretrained.cache_root(str(tmp_path / "flag")) == str(tmp_path / "flag")
    monkeypatch.delenv("TAGSCALE_CACHE")
    assert pretrained.cache_root() == os.path.expanduser("~/.cache/tagscale")


def test_list_cli(cache_dir, tmp_path, capsys):
    assert pretrained_cmd.main(["list", "--cache-dir", cache_dir]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "DATASET", "TAGS", "PATH"]
    assert lines[1].startswith("musicnn-mtt") and f" {os.path.join(cache_dir, 'models', 'musicnn-mtt')} " in lines[1]
    assert "Million Song Dataset" in lines[2] and " 50 " in lines[2]
    assert pretrained_cmd.main(["list", "--cache-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("not fetched") == 2


def test_list_names_each_models_licence_source_and_wheel_hash(tmp_path, capsys):
    assert pretrained_cmd.main(["list", "--json", "--cache-dir", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == ["musicnn-mtt", "musicnn-msd"]
    for row in rows:
        assert (row["license"], row["commercial"], row["path"]) == ("ISC", True, None)
        assert row["sha256"] == "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"
        assert "musicnn-0.1.0-py3-none-any.whl" in row["source"] and "PyPI" in row["source"]
    assert pretrained_cmd.main(["list", "--cache-dir", str(tmp_path)]) == 0
    header, first, _ = capsys.readouterr().out.splitlines()
    assert header.split()[:8] == ["NAME", "DATASET", "TAGS", "PATH", "LICENSE", "COMMERCIAL", "SHA256", "SOURCE"]
    assert first.split()[5:8] == ["ISC", "yes", rows[0]["sha256"]] and first.endswith(rows[0]["source"])


def test_fetch_without_index_is_one_clear_line(tmp_path):
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_FIND_LINKS="", TAGSCALE_CACHE=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "infra.cli", "pretrained", "fetch"],
        check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("tagscale pretrained: error: could not download musicnn==0.1.0 with pip")


def test_fetch_rejects_unknown_names(tmp_path):
    with pytest.raises(TagscaleError, match="'musicnn-big'"):
        pretrained.fetch(["musicnn-big"], str(tmp_path))


# -----------------------------------------------------------------------------
# parity 1: same input, two implementations


@pytest.mark.parametrize("name", sorted(pretrained.MODELS))
def test_keras_model_equals_musicnn_graph(name, package_dir, reference_graphs, serving_models, real_clips):
    keras_model, _ = pretrained.build_musicnn_model(package_dir, pretrained.MODELS[name])
    clip = next(path for path in real_clips if "Hungarian" in path.name)
    rng = np.random.default_rng(0)
    log_mel = np.concatenate(
        [
            musicnn_log_mel_patches(clip)[:6],  # real music
            rng.uniform(0, 4, (2, dsp.PATCH_FRAMES, dsp.N_MELS)).astype(np.float32),
        ]
    )
    expected = reference_graphs[name](log_mel)
    keras_scores = np.asarray(keras_model(log_mel, training=False)["scores"])
    diff = np.abs(keras_scores - expected).max()
    print(f"\n{name}: Keras vs musicnn graph, max |diff| of sigmoid outputs = {diff:.3g}")
    assert diff < 1e-5
    # The saved serving model computes its own log-mel from the waveform: same weights again.
    waveform = rng.normal(0, 0.1, (3, dsp.PATCH_SAMPLES)).astype(np.float32)
    served = serving_models[name].predict(waveform)["scores"]
    assert np.abs(served - reference_graphs[name](dsp.log_mel_patches(waveform).numpy())).max() < 1e-5


@pytest.mark.parametrize("name", sorted(pretrained.MODELS))
def test_fast_serving_graph_equals_musicnn_graph_on_music(name, reference_graphs, serving_models, real_clips):
    """The served graph is model.fast_frontend's form (max before ReLU/BN, blocked banded GEMMs);
    on real music it gives musicnn's own float32 scores to 2.4e-7 (mtt) and 6.6e-7 (msd), measured,
    well inside 1e-4."""
    from pipelines.decode.audio import decode_audio

    model = serving_models[name]
    assert model.info["serving_graph"] == export.FAST_GRAPH
    worst = 0.0
    for clip in real_clips[:4]:
        patches = dsp.patch_waveform(decode_audio(str(clip)).samples, max_patches=8)
        served = model.predict(patches)["scores"]
        expected = reference_graphs[name](dsp.log_mel_patches(patches).numpy())
        worst = max(worst, float(np.abs(served - expected).max()))
    print(f"\n{name}: fast serving graph vs musicnn graph, max |diff| = {worst:.3g}")
    assert worst < 2e-6


# -----------------------------------------------------------------------------
# parity 2: same audio, two front ends (tagscale's path vs the musicnn way)


@pytest.mark.slow
def test_same_audio_tagscale_path_vs_musicnn_way(real_clips, reference_graphs, serving_models):
    import soundfile

    name = "musicnn-mtt"
    model, graph = serving_models[name], reference_graphs[name]
    rows = []
    for clip in real_clips:
        ours = tagscale_scores(clip, model)
        theirs = graph(musicnn_log_mel_patches(clip)).mean(axis=0)
        worst = int(np.argmax(np.abs(ours - theirs)))
        rows.append(
            dict(
                clip=clip.name,
                seconds=soundfile.info(str(clip)).duration,
                diff=float(np.abs(ours - theirs).max()),
                worst_tag=model.tags[worst],
                top3_ours=top(ours, model.tags, 3),
                top3_theirs=top(theirs, model.tags, 3),
            )
        )
    print()
    for row in sorted(rows, key=lambda row: -row["diff"]):
        print(
            f"{row['diff']:.2e} ({row['worst_tag']}) {row['seconds']:6.1f}s {row['clip'][:48]:48} "
            f"tagscale {row['top3_ours']} musicnn {row['top3_theirs']}"
        )
    long_rows = [row for row in rows if row["seconds"] >= MIN_TOP1_SECONDS]
    assert len(long_rows) >= 10
    for row in long_rows:
        assert row["top3_ours"][0] == row["top3_theirs"][0], row
    same_top3 = sum(set(row["top3_ours"]) == set(row["top3_theirs"]) for row in long_rows)
    assert same_top3 >= 0.9 * len(long_rows)
    # Measured on these clips: at most 1.8e-7 (both paths decode to the same 16 kHz samples closely
    # enough, and the served graph computes musicnn's function to float32 rounding).
    assert max(row["diff"] for row in rows) < 1e-6


def test_hungarian_dance_gets_plausible_tags(cache_dir, real_clips):
    from pipelines.decode.audio import decode_audio

    model = export.load_serving_model(pretrained.resolve_model("musicnn-mtt", cache_dir))
    clip = next(path for path in real_clips if "Hungarian" in path.name)
    patches = dsp.patch_waveform(decode_audio(str(clip)).samples)
    outputs = model.predict(patches)
    export.check_outputs(outputs, len(model.tags))
    scores = outputs["scores"].mean(axis=0)
    top3 = top(scores, model.tags, 3)
    shown = [(tag, round(float(scores[model.tags.index(tag)]), 3)) for tag in top3]
    print(f"\nHungarian Dance no. 5 (string orchestra), top 3: {shown}")
    assert len(set(top3) & {"classical", "strings", "violin"}) >= 2
    assert outputs["embedding"].shape == (len(patches), 200)


def test_an_older_conversion_is_converted_again_with_the_same_version(cache_dir, tmp_path, capsys):
    import json
    import shutil

    old_cache = tmp_path / "cache"
    shutil.copytree(os.path.join(cache_dir, "wheels"), old_cache / "wheels")
    target = old_cache / "models" / "musicnn-mtt"
    shutil.copytree(os.path.join(cache_dir, "models", "musicnn-mtt"), target)
    info_file = target / export.INFO_FILE
    info = json.loads(info_file.read_text())
    version = info.pop("serving_graph") and info["version"]
    info_file.write_text(json.dumps(info))  # as written before the fast graph existed
    assert not pretrained.is_current(pretrained.fetched_info(str(target)))
    assert pretrained.resolve_model("musicnn-mtt", str(old_cache)) == str(target)
    assert "converting musicnn-mtt to the current serving graph" in capsys.readouterr().err
    info = pretrained.fetched_info(str(target))
    assert info["serving_graph"] == export.FAST_GRAPH and info["version"] == version
