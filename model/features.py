"""The example schema: splits, shard kinds, feature specs and the one ``preprocessing_fn``.

Featurize writes what this module describes, the trainer reads it, and the serving export
applies the same tf.Transform graph. An *example* is one 187-frame patch of a track (about
3 s, see :mod:`model.dsp`): ``waveform`` holds its 48,128 samples at 16 kHz, ``log_mel`` its
(187, 96) log-mel normalised per mel band by the training split's statistics, and ``labels``
the track's multi-hot vector over the top-K tag vocabulary.
"""

from __future__ import annotations

from model import dsp

SPLITS = ("train", "valid", "test")
TAG_VOCABULARY = "tags"  # tf.Transform vocabulary file name (transform_fn/assets/tags)
FRONTENDS = ("waveform", "spectrogram")
SHARD_KIND = {"waveform": "waveform", "spectrogram": "mel"}  # front-end -> shard folder
INPUT_FEATURE = {"waveform": "waveform", "spectrogram": "log_mel"}  # front-end -> feature it reads
# The frames after a track's last whole patch, on that patch's record only (raw bytes, same
# encoding as the signal): what random crops need to reach the track's last frame.
TAIL_FEATURE = {"mel": "log_mel_tail", "waveform": "waveform_tail"}
WAVEFORM_SCALE = 32768.0  # int16 PCM full scale: stored sample = round(waveform * 32768), clipped


def raw_feature_spec() -> dict:
    """The raw tf.Transform input: one patch of a track (its log-mel, not yet normalised) with
    the track's tags. The log-mel is computed once, in featurize's decode stage, by
    :func:`model.dsp.log_mel_patches`; serving applies the same function before this transform."""
    import tensorflow as tf

    return {
        "track_id": tf.io.FixedLenFeature([], tf.string),
        "patch_index": tf.io.FixedLenFeature([], tf.int64),
        "log_mel": tf.io.FixedLenFeature([dsp.PATCH_FRAMES, dsp.N_MELS], tf.float32),
        "tags": tf.io.VarLenFeature(tf.string),
    }


def shard_feature_spec(kind: str, top_k: int) -> dict:
    """The tf.train.Example features of ``DIR/{kind}/`` shards: what trainers parse.

    The signal is one bytes feature, raw little-endian values: ``log_mel`` 187 x 96 float32
    (normalised), ``waveform`` 48,128 int16 PCM samples (see :func:`decode_signal`). Raw bytes
    cost nothing to encode or parse, where a float list is copied value by value.
    """
    import tensorflow as tf

    if kind not in ("mel", "waveform"):
        raise ValueError(f"unknown shard kind {kind!r}")
    return {
        "track_id": tf.io.FixedLenFeature([], tf.string),
        "patch_index": tf.io.FixedLenFeature([], tf.int64),
        "labels": tf.io.FixedLenFeature([top_k], tf.float32),
        ("log_mel" if kind == "mel" else "waveform"): tf.io.FixedLenFeature([], tf.string),
    }


def tail_feature_spec(kind: str) -> dict:
    """The tail of a track, on the record of its last patch: the log-mel frames after that patch
    (``r`` x 96 float32, normalised as the patches) or the waveform samples after it (``r`` x 256
    int16), ``r`` = :func:`model.dsp.tail_frames`; empty on every other record and for tracks
    without a tail (and in shards written before tails were kept)."""
    import tensorflow as tf

    return {TAIL_FEATURE[kind]: tf.io.FixedLenFeature([], tf.string, default_value="")}


def decode_signal(kind: str, raw_bytes):
    """Parsed ``log_mel`` / ``waveform`` bytes (any batch shape) -> float32 model input:
    (..., 187, 96) log-mel or (..., 48128) waveform in [-1, 1)."""
    import tensorflow as tf

    if kind == "mel":
        values = tf.io.decode_raw(raw_bytes, tf.float32, little_endian=True)
        return tf.reshape(values, tf.concat([tf.shape(raw_bytes), [dsp.PATCH_FRAMES, dsp.N_MELS]], 0))
    if kind == "waveform":
        pcm = tf.io.decode_raw(raw_bytes, tf.int16, little_endian=True)
        return tf.cast(pcm, tf.float32) * (1.0 / WAVEFORM_SCALE)
    raise ValueError(f"unknown shard kind {kind!r}")


def waveform_pcm(waveform):
    """float32 waveform patches -> int16 PCM as stored in ``waveform/`` shards (numpy)."""
    import numpy as np

    return np.clip(np.rint(np.asarray(waveform) * WAVEFORM_SCALE), -32768, 32767).astype("<i2")


def preprocessing_fn(inputs: dict, *, top_k: int) -> dict:
    """The single definition of the features (tf.Transform): the log-mel's per-band
    normalisation from full-pass statistics, and multi-hot labels over the tag vocabulary.

    Per-band statistics: tf.Transform gives the mean and variance of every (frame, band) cell
    over all training patches; each cell has the same count, so the band mean is the mean of
    its cells and the band variance is the mean cell variance plus the variance of the cell
    means (law of total variance) - exact, in one pass.
    """
    import tensorflow as tf
    import tensorflow_transform as tft

    log_mel = inputs["log_mel"]  # (batch, frames, mel), from dsp.log_mel_patches
    cell_mean = tft.mean(log_mel, reduce_instance_dims=False)  # (frames, mel)
    cell_var = tft.var(log_mel, reduce_instance_dims=False)
    band_mean = tf.reduce_mean(cell_mean, axis=0)  # (mel,)
    band_var = tf.reduce_mean(cell_var + tf.square(cell_mean - band_mean), axis=0)
    band_std = tf.sqrt(tf.maximum(band_var, 1e-12))

    # Count each track's tags once (on its first patch) so long tracks do not outvote short ones.
    tags = inputs["tags"]
    first_patch = tf.gather(tf.equal(inputs["patch_index"], 0), tags.indices[:, 0])
    vocabulary = tft.vocabulary(tf.sparse.retain(tags, first_patch), top_k=top_k, vocab_filename=TAG_VOCABULARY)
    tag_ids = tft.apply_vocabulary(tags, vocabulary, default_value=-1)
    known = tf.sparse.retain(tag_ids, tag_ids.values >= 0)
    labels = tf.cast(tf.sparse.to_indicator(known, top_k), tf.float32)  # (batch, top_k)

    return {
        "track_id": inputs["track_id"],
        "patch_index": inputs["patch_index"],
        "log_mel": (log_mel - band_mean) / band_std,
        "labels": labels,
    }


def raw_arrow_schema():
    """Arrow layout of the raw examples, as tfx_bsl decodes tf.Examples (every column a list)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("track_id", pa.large_list(pa.large_binary())),
            ("patch_index", pa.large_list(pa.int64())),
            ("log_mel", pa.large_list(pa.float32())),
            ("tags", pa.large_list(pa.large_binary())),
        ]
    )
