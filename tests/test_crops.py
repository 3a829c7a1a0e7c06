"""Random crops from hand-written shards (no Beam run): a crop is the track's frames and samples from
its offset, any offset of the whole track can be drawn (the last frame included), one crop per track
per epoch, the same on a rerun of the epoch."""

import json

import numpy as np
import pytest
import tensorflow as tf

from model import dsp, features
from pipelines.shards import encode_examples
from trainer import crops, inputs

# frames per track: one patch; one patch and a 2-frame tail; three patches and the longest tail;
# two patches and no tail
TRACK_FRAMES = {b"a": 187, b"b": 189, b"c": 3 * 187 + 186, b"d": 2 * 187}
TOP_K = 4


def padded_waveform(t: int, frames: int) -> np.ndarray:
    """The zero-padded track's int16 samples (what the patches and the tail cut): 256 per frame + 256."""
    rng = np.random.default_rng(t)
    return rng.integers(-30000, 30000, frames * dsp.HOP_LENGTH + dsp.N_FFT // 2, dtype=np.int16)


def mel_frames(t: int, frames: int) -> np.ndarray:
    """Log-mel frames whose every value is 1000 t + frame: a crop shows where it starts."""
    return np.repeat((1000.0 * t + np.arange(frames, dtype=np.float32))[:, None], dsp.N_MELS, axis=1)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A features folder of two train shards holding the tracks of TRACK_FRAMES as featurize lays them
    out: consecutive patches, the tail on the last patch's record."""
    root = tmp_path_factory.mktemp("crops")
    (root / "mel").mkdir()
    (root / "waveform").mkdir()
    names = {kind: [f"{kind}/train-{i:05d}-of-00002.tfrecord" for i in range(2)] for kind in ("mel", "waveform")}
    writers = {kind: [tf.io.TFRecordWriter(str(root / name)) for name in names[kind]] for kind in names}
    for t, (track, frames) in enumerate(TRACK_FRAMES.items()):
        n, r = frames // 187, frames % 187
        mel, wave = mel_frames(t, frames), padded_waveform(t, frames)
        labels = np.float32([t, 0, 0, 0])
        for k in range(n):
            tail = None
            if k == n - 1 and r:
                tail = (mel[n * 187 :], wave[n * dsp.PATCH_HOP_SAMPLES + 256 :])
            patch_wave = wave[k * dsp.PATCH_HOP_SAMPLES : k * dsp.PATCH_HOP_SAMPLES + dsp.PATCH_SAMPLES]
            encoded = encode_examples(track, k, labels, mel[k * 187 : (k + 1) * 187], patch_wave, tail)
            writers["mel"][t % 2].write(encoded[0])
            writers["waveform"][t % 2].write(encoded[1])
    for writer in (w for ws in writers.values() for w in ws):
        writer.close()
    metadata = {"tags": ["t0", "t1", "t2", "t3"], "top_k": TOP_K, "files": {k: {"train": v} for k, v in names.items()}}
    (root / "metadata.json").write_text(json.dumps(metadata))
    return inputs.Features(path=str(root), metadata=metadata)


def epoch_crops(shards, frontend: str, epoch: int, mode: str = "random") -> dict:
    data = crops.crop_dataset(
        shards,
        frontend,
        crops.track_frames(shards, "train"),
        tf.Variable(epoch, dtype=tf.int64),
        seed=0,
        batch_size=3,
        mode=mode,
        with_offsets=True,
    )
    assert data.cardinality().numpy() == 2  # 4 tracks in batches of 3
    out = {}
    for batch in data:
        for track, offset, signal, labels in zip(
            batch["track_id"].numpy(), batch["offset"].numpy(), batch["inputs"].numpy(), batch["labels"].numpy()
        ):
            assert track not in out  # one crop per track
            assert labels.tolist() == [list(TRACK_FRAMES).index(track), 0, 0, 0]
            out[track] = (int(offset), signal)
    assert set(out) == set(TRACK_FRAMES)
    return out


def test_track_frames_count_the_tails(shards):
    assert crops.track_frames(shards, "train") == TRACK_FRAMES


def test_crops_reach_every_offset_of_the_whole_track_and_its_last_frame(shards):
    seen = {track: set() for track in TRACK_FRAMES}
    for epoch in range(24):
        mel_crops, wave_crops = epoch_crops(shards, "spectrogram", epoch), epoch_crops(shards, "waveform", epoch)
        for t, (track, frames) in enumerate(TRACK_FRAMES.items()):
            offset, mel = mel_crops[track]
            assert wave_crops[track][0] == offset and 0 <= offset <= frames - 187  # one draw, both kinds
            np.testing.assert_array_equal(mel, mel_frames(t, frames)[offset : offset + 187])
            start = offset * dsp.HOP_LENGTH
            expected = padded_waveform(t, frames)[start : start + dsp.PATCH_SAMPLES] / 32768.0
            np.testing.assert_array_equal(wave_crops[track][1], expected.astype(np.float32))
            seen[track].add(offset)
    assert seen[b"a"] == {0}
    assert seen[b"b"] == {0, 1, 2}  # the last offset: the crop ends on the track's last frame
    assert len(seen[b"c"]) >= 20 and max(seen[b"c"]) > 2 * 187  # crops reach into the tail
    assert epoch_crops(shards, "spectrogram", 5).keys() == seen.keys()
    rerun = epoch_crops(shards, "waveform", 7)
    again = epoch_crops(shards, "waveform", 7)
    assert {k: v[0] for k, v in rerun.items()} == {k: v[0] for k, v in again.items()}  # a restart draws the same


def test_the_last_offset_of_a_long_track_is_its_last_187_frames(shards):
    """Cut directly: the crop at T - 187 of the 3-patch track is patch 2's end and the whole tail."""
    frames, t = TRACK_FRAMES[b"c"], 2
    mel, wave = mel_frames(t, frames), padded_waveform(t, frames)
    last = frames - 187
    mel_bytes = crops.crop_bytes(
        "mel", tf.constant([mel[374:561].tobytes()]), tf.constant([mel[561:].tobytes()]), tf.constant([last], tf.int64)
    )
    decoded = features.decode_signal("mel", mel_bytes).numpy()[0]
    np.testing.assert_array_equal(decoded, mel[-187:])
    assert decoded[-1, 0] == 1000 * t + frames - 1  # the track's last frame
    patch = wave[2 * dsp.PATCH_HOP_SAMPLES : 2 * dsp.PATCH_HOP_SAMPLES + dsp.PATCH_SAMPLES]
    tail = wave[3 * dsp.PATCH_HOP_SAMPLES + 256 :]
    wave_bytes = crops.crop_bytes(
        "waveform", tf.constant([patch.tobytes()]), tf.constant([tail.tobytes()]), tf.constant([last], tf.int64)
    )
    np.testing.assert_array_equal(np.frombuffer(wave_bytes.numpy()[0], "<i2"), wave[-dsp.PATCH_SAMPLES :])
    with pytest.raises(ValueError, match="unknown shard kind 'png'"):
        crops.crop_bytes("png", mel_bytes, mel_bytes, tf.constant([0], tf.int64))


def test_grid_crops_are_whole_patches(shards):
    for epoch in range(6):
        for t, (track, (offset, mel)) in enumerate(epoch_crops(shards, "spectrogram", epoch, "grid").items()):
            frames = TRACK_FRAMES[track]
            assert offset % 187 == 0 and offset + 187 <= frames // 187 * 187
            np.testing.assert_array_equal(
                mel, mel_frames(list(TRACK_FRAMES).index(track), frames)[offset : offset + 187]
            )
