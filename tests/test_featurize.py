"""featurize: plain functions, then one real DirectRunner run checked end to end."""

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from model import dsp, features
from pipelines import featurize, shards, spill, stages
from pipelines.catalog import Track
from pipelines.decode import audio
from runfolder import layout

FORMATS = [".wav", ".flac", ".ogg", ".mp3"]


def test_split_is_deterministic_and_near_80_10_10():
    ids = [f"track-{i}" for i in range(20_000)]
    first = [featurize.split_of(i) for i in ids]
    assert first == [featurize.split_of(i) for i in ids]
    counts = collections.Counter(first)
    assert abs(counts["train"] / len(ids) - 0.8) < 0.01
    assert abs(counts["valid"] / len(ids) - 0.1) < 0.01
    # Another interpreter with another hash seed agrees (no use of Python's salted hash()).
    code = "from pipelines import featurize; print(''.join(featurize.split_of(f'track-{i}')[1] for i in range(500)))"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    assert other == "".join(split[1] for split in first[:500])


def test_split_fractions_are_configurable():
    ids = [f"t{i}" for i in range(5000)]
    counts = collections.Counter(featurize.split_of(i, valid_fraction=0.3, test_fraction=0.2) for i in ids)
    assert abs(counts["test"] / 5000 - 0.2) < 0.03 and abs(counts["valid"] / 5000 - 0.3) < 0.03


def test_check_audio_rejects_short_silent_and_nan():
    ok = np.random.default_rng(0).normal(0, 0.1, 16000 * 2).astype(np.float32)
    stages.check_audio(ok, min_duration_s=1.0)
    with pytest.raises(audio.DecodeError, match="too short"):
        stages.check_audio(ok[:8000], min_duration_s=1.0)
    with pytest.raises(audio.DecodeError, match="silent"):
        stages.check_audio(np.zeros(32000, np.float32), min_duration_s=1.0)
    bad = ok.copy()
    bad[5] = np.nan
    with pytest.raises(audio.DecodeError, match="NaN"):
        stages.check_audio(bad, min_duration_s=1.0)


def test_int16_waveform_snr_and_clipping():
    """The stored waveform is int16 PCM: quantisation noise is 1/65536 of full scale (a music
    signal at -20 dBFS RMS keeps 81 dB SNR); values beyond full scale clip instead of wrapping."""
    music = np.random.default_rng(1).normal(0, 0.1, 48_128).astype(np.float32)  # -20 dBFS RMS
    decoded = features.decode_signal("waveform", tf.constant(features.waveform_pcm(music).tobytes())).numpy()
    snr = 10 * np.log10(np.mean(music**2) / np.mean((decoded - music) ** 2))
    assert 80.5 < snr < 81.5
    assert list(features.waveform_pcm(np.array([1.5, -1.5, 1.0]))) == [32767, -32768, 32767]


def test_the_example_described_in_metadata_follows_the_signal_constants(monkeypatch):
    assert featurize.example_description() == (  # what metadata.json has always said, for musicnn's front-end
        "one 187-frame patch (~3 s): waveform = 48128 int16 PCM samples at 16 kHz (bytes, /32768 for float), "
        "log_mel = 187 x 96 float32 normalised per band (bytes), labels[top_k] multi-hot"
    )
    for name, value in (("PATCH_FRAMES", 128), ("PATCH_SAMPLES", 33024), ("N_MELS", 128), ("SAMPLE_RATE", 22050)):
        monkeypatch.setattr(dsp, name, value)
    text = featurize.example_description()
    assert text.startswith("one 128-frame patch") and "33024 int16 PCM samples at 22.05 kHz" in text
    assert "log_mel = 128 x 128 float32" in text


def test_shard_assignment_and_sizing_are_stable():
    ids = [f"track-{i}" for i in range(4000)]
    counts = collections.Counter(layout.shard_of(i, 4) for i in ids)
    assert sorted(counts) == [0, 1, 2, 3] and min(counts.values()) > 900
    assert [layout.shard_of(i, 4) for i in ids[:50]] == [layout.shard_of(i, 4) for i in ids[:50]]
    per_example = shards.example_bytes(50)
    assert shards.shard_count(0, target_bytes=10**6, top_k=50) == 1
    assert shards.shard_count(100, target_bytes=per_example * 10, top_k=50) == 10
    assert shards.shard_count(101, target_bytes=per_example * 10, top_k=50) == 11


def test_decode_tracks_transform_with_test_pipeline(tmp_path):
    import soundfile
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to
    from made import synth_tone

    soundfile.write(tmp_path / "ok.flac", synth_tone(2.0, 22050, seed=3), 22050)
    (tmp_path / "empty.wav").write_bytes(b"")
    tracks = [Track("ok", str(tmp_path / "ok.flac")), Track("empty", str(tmp_path / "empty.wav"))]
    with TestPipeline() as pipeline:
        decoded = pipeline | beam_create(tracks) | stages.DecodeTracks(stages.DecodeOptions())
        lengths = decoded.decoded | "Length" >> beam_map(
            lambda item: (item[0].track_id, round(len(item[1]) / 16000, 1))
        )
        assert_that(lengths, equal_to([("ok", 2.0)]))
        reasons = decoded["dead_letter"] | "Reason" >> beam_map(
            lambda row: (row["track_id"], row["error"].startswith("empty file"))
        )
        assert_that(reasons, equal_to([("empty", True)]), label="dead")


def beam_create(items):
    import apache_beam as beam

    return beam.Create(items)


def beam_map(fn):
    import apache_beam as beam

    return beam.Map(fn)


# ------------------------------------------------------------------------- end to end

TAG_SETS = [("bright", "drums"), ("dark",), ("bright",), ("dark", "drums", "bass")]


@pytest.fixture(scope="module")
def featurized(tmp_path_factory):
    """Featurize 24 generated tracks in 4 formats plus the three classic bad files."""
    import soundfile
    from made import synth_tone

    root = tmp_path_factory.mktemp("featurize")
    formats = {
        ".wav": ("WAV", "PCM_16"),
        ".flac": ("FLAC", "PCM_16"),
        ".ogg": ("OGG", "VORBIS"),
        ".mp3": ("MP3", "MPEG_LAYER_III"),
    }
    lines = ["track_id,uri,tags"]
    expected_tags = {}
    for i in range(24):
        ext = FORMATS[i % 4]
        path = root / f"t{i:02d}{ext}"
        rate = (22050, 44100, 48000, 16000)[i % 4]
        seconds = 4.0 + (i % 3) * 2.5  # 1 to 3 patches
        soundfile.write(
            path,
            synth_tone(seconds, rate, channels=1 + i % 2, seed=i),
            rate,
            format=formats[ext][0],
            subtype=formats[ext][1],
        )
        tags = TAG_SETS[i % 4]
        expected_tags[f"t{i:02d}"] = tags
        lines.append(f"t{i:02d},{path},{';'.join(tags)}")
    (root / "empty.mp3").write_bytes(b"")
    (root / "text.mp3").write_text("not audio " * 100)
    lines += [
        f"missing,{root / 'missing.mp3'},dark",
        f"empty,{root / 'empty.mp3'},dark",
        f"text,{root / 'text.mp3'},dark",
    ]
    (root / "catalog.csv").write_text("\n".join(lines) + "\n")
    output = root / "out"
    metadata = featurize.run(
        [
            "--catalog",
            str(root / "catalog.csv"),
            "--output",
            str(output),
            "--valid-fraction",
            "0.2",
            "--test-fraction",
            "0.2",
        ]
    )
    return {"output": output, "metadata": metadata, "expected_tags": expected_tags}


def read_shards(output, kind, split, top_k):
    """Every example of a split's shards (the files metadata.json lists), signal decoded."""
    metadata = json.loads((output / "metadata.json").read_text())
    files = [str(output / name) for name in metadata["files"][kind][split]]
    feature = "log_mel" if kind == "mel" else "waveform"

    def parse(record):
        example = tf.io.parse_single_example(record, features.shard_feature_spec(kind, top_k))
        return {**example, feature: features.decode_signal(kind, example[feature])}

    return [{k: v.numpy() for k, v in example.items()} for example in tf.data.TFRecordDataset(files).map(parse)]


@pytest.mark.slow
def test_counts_add_up_and_metadata_is_complete(featurized):
    metadata = featurized["metadata"]
    assert metadata["tracks_in"] == 27
    assert metadata["tracks_ok"] == 24 and metadata["tracks_failed"] == 3
    assert metadata["tracks_in"] == metadata["tracks_ok"] + metadata["tracks_failed"]
    assert sum(split["tracks"] for split in metadata["splits"].values()) == 24
    assert all(metadata["splits"][name]["tracks"] > 0 for name in features.SPLITS)
    assert sorted(metadata["tags"]) == ["bass", "bright", "dark", "drums"]
    assert metadata["signal"] == dsp.constants()
    expected_seconds = sum(4.0 + (i % 3) * 2.5 for i in range(24))
    assert abs(metadata["audio_seconds"] - expected_seconds) < 24 * 0.06  # mp3 padding only
    on_disk = json.loads((featurized["output"] / "metadata.json").read_text())
    assert on_disk["tracks_ok"] == 24 and not (featurized["output"] / "tmp").exists()


@pytest.mark.slow
def test_dead_letter_has_one_row_per_bad_file_with_reason(featurized):
    rows = pq.read_table(featurized["output"] / "dead_letter").to_pylist()
    reasons = {row["track_id"]: (row["stage"], row["error"]) for row in rows}
    assert set(reasons) == {"missing", "empty", "text"}
    assert reasons["missing"][1].startswith("file not found")
    assert reasons["empty"][1].startswith("empty file")
    assert reasons["text"][1].startswith("ffmpeg failed")
    assert {stage for stage, _ in reasons.values()} == {"decode"}


@pytest.mark.slow
def test_shards_parse_with_tf_data_and_cover_every_patch(featurized):
    output, metadata = featurized["output"], featurized["metadata"]
    top_k, tags = metadata["top_k"], metadata["tags"]
    for split in features.SPLITS:
        mel = read_shards(output, "mel", split, top_k)
        wave = read_shards(output, "waveform", split, top_k)
        assert len(mel) == len(wave) == metadata["splits"][split]["examples"] > 0
        assert {e["track_id"].decode() for e in mel} == {e["track_id"].decode() for e in wave}
        for example in mel:
            assert example["log_mel"].shape == (dsp.PATCH_FRAMES, dsp.N_MELS)
            track = example["track_id"].decode()
            assert featurize.split_of(track, valid_fraction=0.2, test_fraction=0.2) == split
            on = {tags[i] for i in np.flatnonzero(example["labels"][: len(tags)])}
            assert on == set(featurized["expected_tags"][track])
            assert not example["labels"][len(tags) :].any()
        assert wave[0]["waveform"].shape == (dsp.PATCH_SAMPLES,)


@pytest.mark.slow
def test_normalisation_uses_train_band_statistics_equal_to_numpy(featurized):
    """The stored log-mel is the log-mel of the decoded float audio (not of the int16 copy),
    normalised by the band mean and std of every training patch."""
    import csv

    output, top_k = featurized["output"], featurized["metadata"]["top_k"]
    with open(output.parent / "catalog.csv") as handle:
        uris = {row["track_id"]: row["uri"] for row in csv.DictReader(handle)}

    def raw_log_mel(track_id):
        return dsp.log_mel_patches(dsp.patch_waveform(audio.decode_audio(uris[track_id]).samples)).numpy()

    train_ids = sorted({e["track_id"].decode() for e in read_shards(output, "mel", "train", top_k)})
    frames = np.concatenate([raw_log_mel(t) for t in train_ids]).reshape(-1, dsp.N_MELS).astype(np.float64)
    mean, std = frames.mean(axis=0), frames.std(axis=0)
    for split in features.SPLITS:  # valid and test use the training statistics too
        for example in read_shards(output, "mel", split, top_k):
            raw = raw_log_mel(example["track_id"].decode())[example["patch_index"]]
            np.testing.assert_allclose(example["log_mel"], (raw - mean) / std, atol=2e-3, rtol=1e-3)


@pytest.mark.slow
def test_transform_fn_is_written_and_loads(featurized):
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(str(featurized["output"]))
    assert output.vocabulary_by_name("tags") == [t.encode() for t in featurized["metadata"]["tags"]]
    assert "log_mel" in output.transformed_feature_spec()


@pytest.mark.slow
def test_multi_processing_runner_writes_the_same_shards(tmp_path):
    """`--direct_running_mode=multi_processing` (worker subprocesses) gives byte-identical shards."""
    import soundfile
    from made import synth_tone

    lines = ["track_id,uri,tags"]
    for i in range(8):
        path = tmp_path / f"m{i}.flac"
        soundfile.write(path, synth_tone(4.0, 22050, seed=i), 22050)
        lines.append(f"m{i},{path},{'x' if i % 2 else 'y'}")
    (tmp_path / "noise.flac").write_text("not audio\n" * 50)
    lines += [f"bad,{tmp_path / 'noise.flac'},x", f"gone,{tmp_path / 'gone.wav'},y", "m1,/a/duplicate.wav,x"]
    (tmp_path / "catalog.csv").write_text("\n".join(lines) + "\n")
    common = ["--catalog", str(tmp_path / "catalog.csv"), "--num-shards", "2"]
    single = featurize.run([*common, "--output", str(tmp_path / "single")])
    multi = featurize.run(
        [
            *common,
            "--output",
            str(tmp_path / "multi"),
            "--direct_running_mode=multi_processing",
            "--direct_num_workers=2",
        ]
    )
    assert single["tracks_ok"] == multi["tracks_ok"] == 8
    same = [
        {k: v for k, v in run.items() if k != "config" and "time" not in k and not k.endswith("_s")}
        for run in (single, multi)
    ]
    assert same[0] == same[1]  # splits, example counts, vocabulary
    dead = [
        sorted(
            (r["track_id"], r["stage"], r["error"]) for r in pq.read_table(tmp_path / out / "dead_letter").to_pylist()
        )
        for out in ("single", "multi")
    ]
    assert dead[0] == dead[1] and [d[0] for d in dead[0]] == ["bad", "gone", "m1"]
    for kind in ("mel", "waveform"):
        names = sorted(p.name for p in (tmp_path / "single" / kind).iterdir())
        assert names == sorted(p.name for p in (tmp_path / "multi" / kind).iterdir())
        for name in names:
            assert (tmp_path / "single" / kind / name).read_bytes() == (tmp_path / "multi" / kind / name).read_bytes()


@pytest.mark.slow
def test_write_shards_with_test_pipeline_sorts_streams_and_transforms(featurized, tmp_path):
    """WriteShards alone: refs in any order -> every shard written (empty ones too), tracks sorted
    by id inside a shard, log-mel normalised and labels made by the written transform."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    rng = np.random.default_rng(5)
    refs = []
    for name, n, tags in (("zeta", 2, ("dark",)), ("alpha", 1, ("bright", "drums")), ("mid", 3, ())):
        patches = rng.normal(0, 0.1, (n, dsp.PATCH_SAMPLES)).astype(np.float32)
        ref = spill.TrackRef(name, "train", n, 3.0 * n, tags, spill.spill_path(str(tmp_path / "spill"), name))
        (tmp_path / "spill").mkdir(exist_ok=True)
        spill.write_track(ref.path, patches, dsp.log_mel_patches(patches).numpy())
        refs.append(ref)
    output = tmp_path / "out"
    counts = {"train": 1, "valid": 2, "test": 1}
    with TestPipeline() as pipeline:
        shard_counts = pipeline | "Counts" >> beam.Create([counts])
        paths = pipeline | beam.Create(refs) | shards.WriteShards(str(output), str(featurized["output"]), shard_counts)
        expected = [
            str(output / name)
            for kind in shards.KINDS
            for split in counts
            for name in shards.shard_files(counts)[kind][split]
        ]
        assert_that(paths, equal_to(expected))
    metadata = {"files": shards.shard_files(counts)}
    (output / "metadata.json").write_text(json.dumps(metadata))
    top_k, tags = featurized["metadata"]["top_k"], featurized["metadata"]["tags"]
    mel, wave = read_shards(output, "mel", "train", top_k), read_shards(output, "waveform", "train", top_k)
    assert [(e["track_id"], e["patch_index"]) for e in mel] == [
        (b"alpha", 0),
        (b"mid", 0),
        (b"mid", 1),
        (b"mid", 2),
        (b"zeta", 0),
        (b"zeta", 1),
    ]
    assert [(e["track_id"], e["patch_index"]) for e in wave] == [(e["track_id"], e["patch_index"]) for e in mel]
    assert {tags[i] for i in np.flatnonzero(mel[0]["labels"])} == {"bright", "drums"} and not mel[1]["labels"].any()
    import tensorflow_transform as tft

    stats = tft.TFTransformOutput(str(featurized["output"]))
    raw = dsp.log_mel_patches(np.stack([e["waveform"] for e in wave])).numpy()
    want = stats.transform_raw_features({"log_mel": tf.constant(raw)}, drop_unused_features=True)["log_mel"].numpy()
    np.testing.assert_allclose(np.stack([e["log_mel"] for e in mel]), want, atol=2e-3)
    assert (output / "mel" / "valid-00001-of-00002.tfrecord").stat().st_size == 0


@pytest.mark.slow
def test_rerun_with_fewer_shards_reads_only_this_runs_files(tmp_path):
    """Featurize with 4 shards, then 2 into the same directory: the 4-shard files go with the
    output they belonged to, metadata lists only the 2-shard ones and training reads exactly its count."""
    import soundfile
    from made import synth_tone

    from trainer import inputs

    lines = ["track_id,uri,tags"]
    for i in range(10):
        path = tmp_path / f"s{i}.wav"
        soundfile.write(path, synth_tone(3.5, 16000, seed=i), 16000)
        lines.append(f"s{i},{path},{'x' if i % 2 else 'y'}")
    (tmp_path / "catalog.csv").write_text("\n".join(lines) + "\n")
    common = [
        "--catalog",
        str(tmp_path / "catalog.csv"),
        "--output",
        str(tmp_path / "out"),
        "--valid-fraction",
        "0.2",
        "--test-fraction",
        "0.2",
    ]
    featurize.run([*common, "--num-shards", "4"])
    metadata = featurize.run([*common, "--num-shards", "2"])
    assert not list((tmp_path / "out" / "mel").glob("*-of-00004.tfrecord"))  # the publish replaced the whole mel/
    assert metadata["files"]["mel"]["train"] == [
        "mel/train-00000-of-00002.tfrecord",
        "mel/train-00001-of-00002.tfrecord",
    ]
    opened = inputs.open_features(str(tmp_path / "out"))
    for frontend in ("spectrogram", "waveform"):
        for split in features.SPLITS:
            seen = sum(len(y) for _, y in inputs.make_dataset(opened, split, frontend, batch_size=4))
            assert seen == metadata["splits"][split]["examples"] > 0


@pytest.mark.slow
def test_target_shard_bytes_sizes_shards_by_volume(featurized, tmp_path):
    """A small byte target gives each split as many shards as its volume needs."""
    metadata = featurize.run(
        [
            "--catalog",
            str(featurized["output"].parent / "catalog.csv"),
            "--output",
            str(tmp_path / "out"),
            "--valid-fraction",
            "0.2",
            "--test-fraction",
            "0.2",
            "--target-shard-bytes",
            str(3 * shards.example_bytes(50)),
        ]
    )
    for split, counts in metadata["splits"].items():
        assert len(metadata["files"]["mel"][split]) == -(-counts["examples"] // 3)
        files = [str(tmp_path / "out" / name) for name in metadata["files"]["waveform"][split]]
        sizes = [os.path.getsize(path) for path in files]
        # the tracks' tails (samples after the last patch, on its record) come on top of the patches
        tail_spec = features.tail_feature_spec("waveform")
        tails = [
            len(tf.io.parse_single_example(record, tail_spec)["waveform_tail"].numpy())
            for record in tf.data.TFRecordDataset(files)
        ]
        framed = sum(tails) + 32 * sum(1 for tail in tails if tail)  # 32: the feature's name and lengths
        # every example once, each a little under example_bytes (the estimate errs on the large side)
        assert (
            counts["examples"] * (shards.example_bytes(50) - 64) + sum(tails)
            < sum(sizes)
            <= counts["examples"] * shards.example_bytes(50) + framed
        )
