"""Random crops on in-memory tracks (no shards, no Beam): a crop is the track's audio from its offset,
one crop per track per epoch, the same on a rerun of the epoch."""

import numpy as np
import pytest
import tensorflow as tf

from model import dsp
from trainer import crops


def test_a_crop_is_the_padded_tracks_samples_and_frames_from_its_offset():
    rng = np.random.default_rng(0)
    wave = rng.normal(0, 0.1, 3 * dsp.PATCH_HOP_SAMPLES + 5000).astype(np.float32)
    patches = dsp.patch_waveform(wave)
    assert len(patches) == 3
    padded = np.zeros(len(wave) + 2 * dsp.PATCH_SAMPLES, np.float32)  # the STFT's centring: N_FFT // 2 zeros
    padded[dsp.N_FFT // 2 : dsp.N_FFT // 2 + len(wave)] = wave
    mel = rng.normal(size=(3, dsp.PATCH_FRAMES, dsp.N_MELS)).astype(np.float32)
    frames = mel.reshape(-1, dsp.N_MELS)
    for offset in (0, 1, 186, 187, 188, 300, 2 * 187):
        k, partial = divmod(offset, dsp.PATCH_FRAMES)
        used = slice(k, k + 2 if partial else k + 1)
        start = offset * dsp.HOP_LENGTH
        wave_crop = crops.crop("waveform", tf.constant(patches[used]), tf.constant(offset, tf.int64)).numpy()
        np.testing.assert_array_equal(wave_crop, padded[start : start + dsp.PATCH_SAMPLES], err_msg=str(offset))
        mel_crop = crops.crop("mel", tf.constant(mel[used]), tf.constant(offset, tf.int64)).numpy()
        np.testing.assert_array_equal(mel_crop, frames[offset : offset + dsp.PATCH_FRAMES], err_msg=str(offset))
    with pytest.raises(ValueError, match="unknown shard kind 'png'"):
        crops.crop("png", tf.constant(mel[:1]), tf.constant(0, tf.int64))


def tracks_dataset(counts: dict[bytes, int]) -> tf.data.Dataset:
    """Batches of patches as make_dataset(with_ids=True) gives them; every mel value of track t,
    frame f (counted through the whole track) is 1000 t + f, so a crop shows where it starts."""
    rows = {"inputs": [], "labels": [], "track_id": [], "patch_index": []}
    for t, (track_id, n) in enumerate(counts.items()):
        for p in range(n):
            frame = p * dsp.PATCH_FRAMES + np.arange(dsp.PATCH_FRAMES, dtype=np.float32)
            rows["inputs"].append(np.repeat((1000 * t + frame)[:, None], dsp.N_MELS, axis=1))
            rows["labels"].append(np.float32([t]))
            rows["track_id"].append(track_id)
            rows["patch_index"].append(p)
    tensors = {key: np.array(value) for key, value in rows.items()}
    tensors["patch_index"] = tensors["patch_index"].astype(np.int64)
    return tf.data.Dataset.from_tensor_slices(tensors).batch(4)


def test_one_crop_per_track_per_epoch_from_any_offset():
    counts = {b"one": 1, b"two": 2, b"three": 3, b"four": 4}
    epoch = tf.Variable(0, dtype=tf.int64)
    cropped = crops.random_crops(
        tracks_dataset(counts), counts, epoch, kind="mel", seed=0, batch_size=3, with_offsets=True
    )

    def offsets() -> dict[bytes, int]:
        seen = {}
        for batch in cropped:
            for x, label, track_id, offset in zip(
                batch["inputs"].numpy(), batch["labels"].numpy(), batch["track_id"].numpy(), batch["offset"].numpy()
            ):
                assert track_id not in seen  # one crop per track
                t = list(counts).index(track_id)
                assert label[0] == t and 0 <= offset <= (counts[track_id] - 1) * dsp.PATCH_FRAMES
                np.testing.assert_array_equal(x[:, 0], 1000 * t + offset + np.arange(dsp.PATCH_FRAMES))
                seen[track_id] = int(offset)
        return seen

    epochs = []
    for e in range(4):
        epoch.assign(e)
        epochs.append(offsets())
        assert set(epochs[-1]) == set(counts) and epochs[-1][b"one"] == 0
    epoch.assign(1)
    assert offsets() == epochs[1]  # a rerun of an epoch (a restart) draws the same offsets
    moved = {track for track in counts if len({seen[track] for seen in epochs}) > 1}
    assert moved == {b"two", b"three", b"four"}  # each epoch draws anew
