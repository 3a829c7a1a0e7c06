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
SHARD_COLUMNS = {  # shard kind -> the features its Examples hold
    "mel": ("track_id", "patch_index", "labels", "log_mel"),
    "waveform": ("track_id", "patch_index", "labels", "waveform"),
}


def raw_feature_spec() -> dict:
    """The raw tf.Transform input: one patch of a track with the track's tags."""
    import tensorflow as tf

    return {
        "track_id": tf.io.FixedLenFeature([], tf.string),
        "patch_index": tf.io.FixedLenFeature([], tf.int64),
        "waveform": tf.io.FixedLenFeature([dsp.PATCH_SAMPLES], tf.float32),
        "tags": tf.io.VarLenFeature(tf.string),
    }


def shard_feature_spec(kind: str, top_k: int) -> dict:
    """The tf.train.Example features of ``DIR/{kind}/`` shards: what trainers parse."""
    import tensorflow as tf

    if kind not in ("mel", "waveform"):
        raise ValueError(f"unknown shard kind {kind!r}")
    data = (
        {"log_mel": tf.io.FixedLenFeature([dsp.PATCH_FRAMES, dsp.N_MELS], tf.float32)}
        if kind == "mel"
        else {"waveform": tf.io.FixedLenFeature([dsp.PATCH_SAMPLES], tf.float32)}
    )
    return {
        "track_id": tf.io.FixedLenFeature([], tf.string),
        "patch_index": tf.io.FixedLenFeature([], tf.int64),
        "labels": tf.io.FixedLenFeature([top_k], tf.float32),
        **data,
    }


def preprocessing_fn(inputs: dict, *, top_k: int) -> dict:
    """The single definition of the features (tf.Transform): log-mel, its per-band
    normalisation from full-pass statistics, and multi-hot labels over the tag vocabulary.

    Per-band statistics: tf.Transform gives the mean and variance of every (frame, band) cell
    over all training patches; each cell has the same count, so the band mean is the mean of
    its cells and the band variance is the mean cell variance plus the variance of the cell
    means (law of total variance) - exact, in one pass.
    """
    import tensorflow as tf
    import tensorflow_transform as tft

    log_mel = dsp.log_mel_patches(inputs["waveform"])  # (batch, frames, mel)
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
        "waveform": inputs["waveform"],
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
            ("waveform", pa.large_list(pa.float32())),
            ("tags", pa.large_list(pa.large_binary())),
        ]
    )
