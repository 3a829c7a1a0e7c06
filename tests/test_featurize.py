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

from model import dsp
from pipelines import audio, featurize, stages
from pipelines.catalog import Track

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
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.strip()
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


def test_track_record_batch_has_one_row_per_patch():
    samples = np.random.default_rng(0).normal(size=16000 * 7).astype(np.float32)
    batch = featurize.track_record_batch(Track("t", "/t.wav", ("a", "b")), samples)
    rows = batch.to_pylist()
    assert [row["patch_index"] for row in rows] == [[0], [1]]
    assert rows[1]["tags"] == [b"a", b"b"] and rows[0]["track_id"] == [b"t"]
    np.testing.assert_array_equal(np.array(rows[1]["waveform"], np.float32), dsp.patch_waveform(samples)[1])
    assert featurize.track_record_batch(Track("t", "/t.wav"), samples, max_patches=1).num_rows == 1
    assert featurize.track_record_batch(Track("t", "/t.wav"), samples).to_pylist()[0]["tags"] == []


# ------------------------------------------------------------------------- end to end

TAG_SETS = [("bright", "drums"), ("dark",), ("bright",), ("dark", "drums", "bass")]


@pytest.fixture(scope="module")
def featurized(tmp_path_factory):
    """Featurize 24 generated tracks in 4 formats plus the three classic bad files."""
    import soundfile

    from conftest import synth_tone

    root = tmp_path_factory.mktemp("featurize")
    formats = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS"), ".mp3": ("MP3", "MPEG_LAYER_III")}
    lines = ["track_id,uri,tags"]
    expected_tags = {}
    for i in range(24):
        ext = FORMATS[i % 4]
        path = root / f"t{i:02d}{ext}"
        rate = (22050, 44100, 48000, 16000)[i % 4]
        seconds = 4.0 + (i % 3) * 2.5  # 1 to 3 patches
        soundfile.write(path, synth_tone(seconds, rate, channels=1 + i % 2, seed=i), rate, format=formats[ext][0], subtype=formats[ext][1])
        tags = TAG_SETS[i % 4]
        expected_tags[f"t{i:02d}"] = tags
        lines.append(f"t{i:02d},{path},{';'.join(tags)}")
    (root / "empty.mp3").write_bytes(b"")
    (root / "text.mp3").write_text("not audio " * 100)
    lines += [f"missing,{root / 'missing.mp3'},dark", f"empty,{root / 'empty.mp3'},dark", f"text,{root / 'text.mp3'},dark"]
    (root / "catalog.csv").write_text("\n".join(lines) + "\n")
    output = root / "out"
    metadata = featurize.run(
        ["--catalog", str(root / "catalog.csv"), "--output", str(output), "--valid-fraction", "0.2", "--test-fraction", "0.2"]
    )
    return {"output": output, "metadata": metadata, "expected_tags": expected_tags}


def read_shards(output, kind, split, top_k):
    files = sorted(str(p) for p in (output / kind).glob(f"{split}-*.tfrecord.gz"))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").map(
        lambda record: tf.io.parse_single_example(record, featurize.shard_feature_spec(kind, top_k))
    )
    return [{k: v.numpy() for k, v in example.items()} for example in dataset]


@pytest.mark.slow
def test_counts_add_up_and_metadata_is_complete(featurized):
    metadata = featurized["metadata"]
    assert metadata["tracks_in"] == 27
    assert metadata["tracks_ok"] == 24 and metadata["tracks_failed"] == 3
    assert metadata["tracks_in"] == metadata["tracks_ok"] + metadata["tracks_failed"]
    assert sum(split["tracks"] for split in metadata["splits"].values()) == 24
    assert all(metadata["splits"][name]["tracks"] > 0 for name in featurize.SPLITS)
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
    for split in featurize.SPLITS:
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
    output, top_k = featurized["output"], featurized["metadata"]["top_k"]
    train_wave = read_shards(output, "waveform", "train", top_k)
    raw = dsp.log_mel_patches(np.stack([e["waveform"] for e in train_wave])).numpy()
    frames = raw.reshape(-1, dsp.N_MELS).astype(np.float64)
    mean, std = frames.mean(axis=0), frames.std(axis=0)
    for split in featurize.SPLITS:  # valid and test use the training statistics too
        by_key = {(e["track_id"], e["patch_index"]): e for e in read_shards(output, "mel", split, top_k)}
        waves = read_shards(output, "waveform", split, top_k)
        raw_split = dsp.log_mel_patches(np.stack([e["waveform"] for e in waves])).numpy()
        for example, raw_mel in zip(waves, raw_split):
            stored = by_key[(example["track_id"], example["patch_index"])]["log_mel"]
            np.testing.assert_allclose(stored, (raw_mel - mean) / std, atol=2e-3, rtol=1e-3)


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

    from conftest import synth_tone

    lines = ["track_id,uri,tags"]
    for i in range(8):
        path = tmp_path / f"m{i}.flac"
        soundfile.write(path, synth_tone(4.0, 22050, seed=i), 22050)
        lines.append(f"m{i},{path},{'x' if i % 2 else 'y'}")
    (tmp_path / "catalog.csv").write_text("\n".join(lines) + "\n")
    common = ["--catalog", str(tmp_path / "catalog.csv"), "--num-shards", "2"]
    single = featurize.run([*common, "--output", str(tmp_path / "single")])
    multi = featurize.run([*common, "--output", str(tmp_path / "multi"), "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert single["tracks_ok"] == multi["tracks_ok"] == 8
    for kind in ("mel", "waveform"):
        names = sorted(p.name for p in (tmp_path / "single" / kind).iterdir())
        assert names == sorted(p.name for p in (tmp_path / "multi" / kind).iterdir())
        for name in names:
            assert (tmp_path / "single" / kind / name).read_bytes() == (tmp_path / "multi" / kind / name).read_bytes()
