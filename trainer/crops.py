"""One training example per track per epoch: a 187-frame crop at a random frame offset.

The seed draws, every epoch, a random frame offset into each training track's whole log-mel
and trains on the 187 frames from there. The shards hold a track as consecutive,
non-overlapping patches (see :mod:`model.dsp`): patch ``k``'s mel frames are the track's frames
``k*187 .. k*187+186`` and its waveform the zero-padded track's samples ``[k*47872,
k*47872+48128)``. So the crop at frame offset ``f = k*187 + r`` is cut from patches ``k`` and
``k+1`` alone (``k`` alone when ``r`` is 0): the mel frames ``r .. r+186`` of the two patches
put end to end, and the waveform samples ``r*256 .. r*256+48127`` of patch ``k``'s first 47,872
samples followed by patch ``k+1``. Any of a track's ``(n - 1) * 187 + 1`` offsets can be drawn;
mel crop and waveform crop of one offset cover the same audio.

The offset is a ``stateless_uniform`` draw seeded by (seed, epoch, hash of the track id), so it
is the same on every worker and after a restart, and changes from epoch to epoch. Only the one
or two patches a crop needs pass a filter; ``group_by_window``, keyed by the track, then puts
them together (it holds a patch only until its track's other patch arrives). Featurize writes
a track's patches one after the other into one shard, so the two arrive within the reach of
the file interleave and the shuffle buffer, and few patches wait at any time.
"""

from __future__ import annotations

import tensorflow as tf

from model import dsp

TRACK_KEY_BUCKETS = 2**62  # a 62-bit fingerprint per track: two tracks of one split never share one


def patch_count_table(counts: dict[bytes, int]) -> tf.lookup.StaticHashTable:
    """``track_id -> number of patches`` as a lookup table (1 for an unknown id)."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(counts), tf.string), tf.constant(list(counts.values()), tf.int64)
        ),
        default_value=1,
    )


def track_draw(track_id, epoch: tf.Variable, seed: int, maxval):
    """A uniform integer in ``[0, maxval)`` seeded by (``seed``, ``epoch``, hash of ``track_id``)."""
    track_hash = tf.strings.to_hash_bucket_fast(track_id, 2**31 - 1)
    return tf.random.stateless_uniform(
        [],
        seed=tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + epoch.read_value(), track_hash]),
        minval=0,
        maxval=maxval,
        dtype=tf.int64,
    )


def crop(kind: str, signal, offset):
    """The crop at frame ``offset % 187`` of one track's consecutive patches ``signal``.

    Parameters
    ----------
    kind : {"mel", "waveform"}
    signal : tf.Tensor
        One or two consecutive patches, in order: (m, 187, 96) log-mel or (m, 48128) waveform.
    offset : tf.Tensor of tf.int64
        The crop's frame offset in the track; only its remainder by 187 matters here.

    Returns
    -------
    tf.Tensor
        (187, 96) log-mel or (48128,) waveform.
    """
    start = offset % dsp.PATCH_FRAMES
    if kind == "mel":
        frames = tf.reshape(signal, [-1, dsp.N_MELS])
        return tf.ensure_shape(frames[start : start + dsp.PATCH_FRAMES], [dsp.PATCH_FRAMES, dsp.N_MELS])
    if kind != "waveform":
        raise ValueError(f"unknown shard kind {kind!r}")
    # every patch but the last contributes its new samples only: the next patch starts there
    samples = tf.concat([tf.reshape(signal[:-1, : dsp.PATCH_HOP_SAMPLES], [-1]), signal[-1]], 0)
    start = start * dsp.HOP_LENGTH
    return tf.ensure_shape(samples[start : start + dsp.PATCH_SAMPLES], [dsp.PATCH_SAMPLES])


def random_crops(
    dataset,
    counts: dict[bytes, int],
    epoch: tf.Variable,
    *,
    kind: str,
    seed: int,
    batch_size: int,
    with_offsets: bool = False,
):
    """One crop per track and epoch from a ``with_ids`` training dataset, re-batched.

    Parameters
    ----------
    dataset : tf.data.Dataset
        Batches of ``{"inputs", "labels", "track_id", "patch_index"}`` (``make_dataset(with_ids=True)``).
    counts : dict
        ``{track_id: number of patches}`` of the tracks in ``dataset`` (``inputs.track_patches``).
    epoch : tf.Variable
        The current epoch (read on every pass), e.g. :class:`trainer.recipe.EpochCounter`'s.
    kind : {"mel", "waveform"}
        The shard kind of ``inputs``.
    with_offsets : bool
        Yield dicts ``{"inputs", "labels", "track_id", "offset"}`` (the crop's frame offset).

    Returns
    -------
    tf.data.Dataset
        ``(inputs, labels)`` batches, one example per track of ``counts``.
    """
    table = patch_count_table(counts)
    frames = dsp.PATCH_FRAMES

    def with_offset(example):
        n = table.lookup(example["track_id"])
        return {**example, "offset": track_draw(example["track_id"], epoch, seed, (n - 1) * frames + 1)}

    def needed(example):
        first, partial = example["offset"] // frames, example["offset"] % frames > 0
        return tf.logical_or(
            tf.equal(example["patch_index"], first),
            tf.logical_and(partial, tf.equal(example["patch_index"], first + 1)),
        )

    def key(example):  # the track, and whether its crop needs two patches (the window's size)
        track = tf.strings.to_hash_bucket_fast(example["track_id"], TRACK_KEY_BUCKETS)
        return track * 2 + tf.cast(example["offset"] % frames > 0, tf.int64)

    def cut(window):
        order = tf.argsort(window["patch_index"])
        example = {
            "inputs": crop(kind, tf.gather(window["inputs"], order), window["offset"][0]),
            "labels": window["labels"][0],
            "track_id": window["track_id"][0],
            "offset": window["offset"][0],
        }
        return example if with_offsets else (example["inputs"], example["labels"])

    dataset = (
        dataset.unbatch()
        .map(with_offset)
        .filter(needed)
        .group_by_window(
            key,
            lambda _, window: window.batch(2).map(cut),
            window_size_func=lambda k: k % 2 + 1,
        )
    )
    return dataset.batch(batch_size).apply(tf.data.experimental.assert_cardinality(-(-len(counts) // batch_size)))
