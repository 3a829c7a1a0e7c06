"""One training example per track per epoch: a 187-frame crop, cut from the shards' bytes.

The seed draws, every epoch, a random frame offset into each training track's whole log-mel
(any of its ``T - 187 + 1`` offsets, ``T`` frames in all) and trains on the 187 frames from
there. The shards hold a track as ``n`` consecutive, non-overlapping patches (see
:mod:`model.dsp`): patch ``k``'s mel frames are the track's frames ``k*187 .. k*187+186`` and
its waveform the zero-padded track's samples ``[k*47872, k*47872+48128)``; the record of the
last patch also holds the ``r = T - n*187`` frames after it, the *tail* (up to 186 frames:
``r*384`` bytes of log-mel, ``r*512`` bytes of int16 PCM; :func:`model.features.tail_feature_spec`).
So the crop at frame offset ``f = k*187 + s`` is the end of patch ``k`` from frame ``s`` (from
sample ``s*256``) followed by the first ``s`` frames (``s*256`` samples after patch ``k``'s end)
of patch ``k+1``, or of the tail when ``k`` is the last patch. Mel crop and waveform crop of
one offset cover the same audio, and the last offset ends on the track's last frame.

The input reads each shard file in order, a batch of serialized records at a time: it parses
only their track ids and patch indices, keeps the one or two records each crop needs (a track's
patches are consecutive in its shard, so the two are neighbours; a scan carries one over a batch
boundary), and cuts the crop out of the serialized signal bytes (``tf.strings.substr``) before
decoding it: the patches a crop does not use are never copied out of their records, let alone
decoded. ``grid`` crops are the same with the offset a multiple of 187: one of the track's fixed
patches.

The offset is a fingerprint of (track id, seed, epoch) modulo the number of offsets: the same
on every worker and after a restart, and different from epoch to epoch.
"""

from __future__ import annotations

import tensorflow as tf

from model import dsp
from model import features as schema
from trainer import inputs

MODES = ("random", "grid")
READ_BATCH = 64  # serialized records looked at per step of a shard's reader
MEL_FRAME_BYTES = dsp.N_MELS * 4  # one float32 log-mel frame
WAVE_FRAME_BYTES = dsp.HOP_LENGTH * 2  # one hop of int16 PCM
TAIL_BYTES_PER_FRAME = {"mel": MEL_FRAME_BYTES, "waveform": WAVE_FRAME_BYTES}


def track_frames(features: inputs.Features, split: str, *, fraction: float = 1.0, subset: int = 0) -> dict[bytes, int]:
    """``{track_id: frames the shards hold for it}`` (``n * 187`` plus its tail) of the tracks of a
    split kept by ``fraction`` and ``subset`` (:func:`trainer.inputs.keep_track`): one pass over
    the mel shards (else the waveform shards), reading the track ids and the tails."""
    inputs.check_fraction(fraction)
    kind = "mel" if inputs.split_shard_paths(features.path, "mel", split, features.metadata) else "waveform"
    files = inputs.split_shard_paths(features.path, kind, split, features.metadata)
    spec = {"track_id": tf.io.FixedLenFeature([], tf.string), **schema.tail_feature_spec(kind)}
    tail = schema.TAIL_FEATURE[kind]

    def ids_and_tails(records):
        parsed = tf.io.parse_example(records, spec)
        return parsed["track_id"], tf.strings.length(parsed[tail]) // TAIL_BYTES_PER_FRAME[kind]

    frames: dict[bytes, int] = {}
    for tracks, tails in tf.data.TFRecordDataset(files).batch(1024).map(ids_and_tails):
        kept = inputs.keep_track(tracks, fraction, subset).numpy() if fraction < 1.0 else [True] * len(tracks)
        for track, extra, keep in zip(tracks.numpy(), tails.numpy(), kept):
            if keep:
                frames[track] = frames.get(track, 0) + dsp.PATCH_FRAMES + int(extra)
    return frames


def frames_table(frames: dict[bytes, int]) -> tf.lookup.StaticHashTable:
    """``track_id -> frames`` as a lookup table (one patch's frames for an unknown id)."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(frames), tf.string), tf.constant(list(frames.values()), tf.int64)
        ),
        default_value=dsp.PATCH_FRAMES,
    )


def draw(track_ids, epoch, seed: int, choices):
    """Uniform integers in ``[0, choices)``, one per track id, from a fingerprint of (id, seed, epoch)."""
    epoch = tf.cast(epoch, tf.int64)  # a variable is read on every call
    key = tf.strings.as_string(tf.cast(seed, tf.int64)) + ":" + tf.strings.as_string(epoch) + ":"
    fingerprint = tf.strings.to_hash_bucket_fast(key + track_ids, 2**62)
    return fingerprint % tf.maximum(choices, 1)


def crop_bytes(kind: str, first, rest, offset):
    """The serialized crops at frame ``offset`` (its remainder by 187, ``s``), one per element.

    Parameters
    ----------
    kind : {"mel", "waveform"}
    first : tf.Tensor of tf.string, (batch,)
        The signal bytes of patch ``k`` (``offset // 187``).
    rest : tf.Tensor of tf.string, (batch,)
        The bytes that follow it in the track: the track's tail, or patch ``k+1``'s signal
        (for the waveform without its first 256 samples, which patch ``k`` ends with: see
        :func:`following`); anything when ``s`` is 0.
    offset : tf.Tensor of tf.int64, (batch,)

    Returns
    -------
    tf.Tensor of tf.string, (batch,)
        Each one patch's bytes: 187 x 96 float32 or 48,128 int16, decodable by
        :func:`model.features.decode_signal`.
    """
    s = offset % dsp.PATCH_FRAMES
    if kind == "mel":
        head = tf.strings.substr(first, s * MEL_FRAME_BYTES, (dsp.PATCH_FRAMES - s) * MEL_FRAME_BYTES)
        tail = tf.strings.substr(rest, tf.zeros_like(s), s * MEL_FRAME_BYTES)
    elif kind == "waveform":
        # patch k from sample s*256 to its end, then the s*256 samples after its end
        head = tf.strings.substr(first, s * WAVE_FRAME_BYTES, 2 * dsp.PATCH_SAMPLES - s * WAVE_FRAME_BYTES)
        tail = tf.strings.substr(rest, tf.zeros_like(s), s * WAVE_FRAME_BYTES)
    else:
        raise ValueError(f"unknown shard kind {kind!r}")
    return tf.strings.join([head, tail])


def following(kind: str, second):
    """The bytes of patch ``k+1``'s signal that follow patch ``k``'s: all of a log-mel patch, a
    waveform patch from sample 256 on (consecutive waveform patches overlap by N_FFT - HOP_LENGTH)."""
    if kind != "waveform":
        return second
    overlap = tf.minimum(2 * (dsp.N_FFT - dsp.HOP_LENGTH), tf.strings.length(second))  # "" stays ""
    return tf.strings.substr(second, overlap, 2 * dsp.PATCH_SAMPLES - overlap)


def _selector(table, epoch, *, seed: int, mode: str, fraction: float, subset: int):
    """A batch of serialized records -> the records the crops need, in order, with their crop's
    offset, patch count and whether a second record follows."""
    frames = dsp.PATCH_FRAMES
    ids_spec = {
        "track_id": tf.io.FixedLenFeature([], tf.string),
        "patch_index": tf.io.FixedLenFeature([], tf.int64),
    }

    def select(records):
        ids = tf.io.parse_example(records, ids_spec)
        track, index = ids["track_id"], ids["patch_index"]
        total = table.lookup(track)
        n = tf.maximum(total // frames, 1)
        if mode == "random":
            offset = draw(track, epoch, seed, total - frames + 1)
        else:
            offset = draw(track, epoch, seed, n) * frames
        k = offset // frames
        # patch k+1 is needed for a partial crop that does not end in the tail
        pair = tf.logical_and(offset % frames > 0, k < n - 1)
        needed = tf.logical_or(tf.equal(index, k), tf.logical_and(pair, tf.equal(index, k + 1)))
        if fraction < 1.0:
            needed = tf.logical_and(needed, inputs.keep_track(track, fraction, subset))
        return {
            "record": tf.boolean_mask(records, needed),
            "offset": tf.boolean_mask(offset, needed),
            "pair": tf.boolean_mask(pair, needed),
            "first": tf.boolean_mask(tf.equal(index, k), needed),
        }

    return select


def _pair(pending, batch):
    """``scan`` step: put each crop's first record beside its second (the next record, possibly
    in the next batch: then the first waits in ``pending``)."""
    keys = ("record", "offset", "pair", "first")
    merged = {key: tf.concat([pending[key], batch[key]], 0) for key in keys}
    size = tf.shape(merged["record"])[0]
    position = tf.range(size)
    waits = tf.logical_and(tf.logical_and(merged["first"], merged["pair"]), tf.equal(position, size - 1))
    done = tf.logical_and(merged["first"], tf.logical_not(waits))
    following = tf.minimum(position + 1, tf.maximum(size - 1, 0))
    second = tf.where(merged["pair"], tf.gather(merged["record"], following), "")
    out = {
        "record": tf.boolean_mask(merged["record"], done),
        "second": tf.boolean_mask(second, done),
        "offset": tf.boolean_mask(merged["offset"], done),
    }
    return {key: tf.boolean_mask(value, waits) for key, value in merged.items()}, out


def _cutter(features: inputs.Features, kind: str, *, with_offsets: bool):
    """Batches of ``{record, second, offset}`` -> crops: parse, cut the bytes, decode."""
    spec = schema.shard_feature_spec(kind, features.top_k)
    name, tail = schema.INPUT_FEATURE["spectrogram" if kind == "mel" else "waveform"], schema.TAIL_FEATURE[kind]
    first_spec = {**spec, **schema.tail_feature_spec(kind)}
    second_spec = {name: tf.io.FixedLenFeature([], tf.string, default_value="")}
    band_stats = features.band_stats if kind == "mel" else None

    def cut(pairs):
        first = tf.io.parse_example(pairs["record"], first_spec)
        second = tf.io.parse_example(pairs["second"], second_spec)[name]
        offset = pairs["offset"]
        # a partial crop of the last patch (it has no second record) goes on into the tail
        rest = tf.where(tf.equal(pairs["second"], ""), first[tail], following(kind, second))
        signal = schema.decode_signal(kind, crop_bytes(kind, first[name], rest, offset))
        if band_stats is not None:  # --no-standardise: undo the stored per-band standardisation
            mean, std = (tf.constant(values, tf.float32) for values in band_stats)
            signal = signal * std + mean
        labels = first["labels"][:, : features.n_tags]
        if with_offsets:
            return {"inputs": signal, "labels": labels, "track_id": first["track_id"], "offset": offset}
        return signal, labels

    return cut


def crop_dataset(
    features: inputs.Features,
    frontend: str,
    frames: dict[bytes, int],
    epoch: tf.Variable,
    *,
    seed: int,
    batch_size: int,
    mode: str = "random",
    fraction: float = 1.0,
    subset: int = 0,
    shuffle_buffer: int = 512,
    with_offsets: bool = False,
) -> tf.data.Dataset:
    """One crop per training track and epoch from the shards, shuffled and batched.

    Parameters
    ----------
    features : inputs.Features
    frontend : {"waveform", "spectrogram"}
    frames : dict
        ``{track_id: frames}`` of the tracks to crop (:func:`track_frames`, same ``fraction`` and ``subset``).
    epoch : tf.Variable
        The current epoch (read on every pass), e.g. :class:`trainer.recipe.EpochCounter`'s.
    mode : {"random", "grid"}
        ``random``: any of the track's frame offsets; ``grid``: one of its whole patches.
    with_offsets : bool
        Yield dicts ``{"inputs", "labels", "track_id", "offset"}`` (the crop's frame offset).

    Returns
    -------
    tf.data.Dataset
        ``(inputs, labels)`` batches, one example per track of ``frames``: (batch, 48128)
        waveform or (batch, 187, 96) log-mel, float32.
    """
    if mode not in MODES:
        raise ValueError(f"unknown crop mode {mode!r}; choose one of {MODES}")
    kind = inputs.SHARD_KIND[frontend]
    files = inputs.split_shard_paths(features.path, kind, "train", features.metadata)
    if not files:
        raise inputs.FeaturesDirError(f"{features.path}: missing {kind}/train-*.tfrecord")
    table = frames_table(frames)
    select = _selector(table, epoch, seed=seed, mode=mode, fraction=fraction, subset=subset)
    cut = _cutter(features, kind, with_offsets=with_offsets)
    empty = {
        "record": tf.zeros([0], tf.string),
        "offset": tf.zeros([0], tf.int64),
        "pair": tf.zeros([0], tf.bool),
        "first": tf.zeros([0], tf.bool),
    }

    def file_crops(path):
        records = tf.data.TFRecordDataset(path, buffer_size=4 << 20).batch(READ_BATCH)
        return records.map(select).scan(empty, _pair).map(cut)

    dataset = tf.data.Dataset.from_tensor_slices(files)
    if len(files) > 1:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    cycle = min(len(files), inputs.MAX_PARSE_CALLS)
    dataset = dataset.interleave(
        file_crops,
        cycle_length=cycle,
        **({"num_parallel_calls": cycle, "deterministic": False} if cycle > 1 else {}),
    )
    dataset = dataset.unbatch().shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).apply(tf.data.experimental.assert_cardinality(-(-len(frames) // batch_size)))
    options = tf.data.Options()
    options.deterministic = False
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.autotune.enabled = False  # as inputs.make_dataset: fixed parallelism, no tuning thread
    return dataset.with_options(options).prefetch(inputs.PREFETCH_BATCHES)
