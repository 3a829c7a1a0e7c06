"""Input functions: featurize shards -> batched tf.data datasets for Keras ``fit`` and evaluation.

A features directory is what ``tagscale featurize`` wrote (local or gs://)::

    DIR/metadata.json                     counts, ``tags`` (the vocabulary in label order), top_k,
                                          ``files``: every shard of the run, by kind and split
    DIR/mel/{train,valid,test}-*.tfrecord       log_mel (187, 96) float32 bytes, normalised per band
    DIR/waveform/{train,valid,test}-*.tfrecord  waveform (48128,) int16 PCM bytes at 16 kHz
    DIR/transform_fn/, DIR/transformed_metadata/   the tf.Transform graph (used by the export)

The waveform front-end reads ``waveform/`` shards, the spectrogram front-end ``mel/`` shards:
only the files ``metadata.json`` lists, so shards an earlier run left behind are never read.
Raw bytes are turned into float32 tensors a batch at a time (:func:`model.features.decode_signal`).
Labels are sliced to the real vocabulary size ``len(metadata['tags'])`` (featurize pads them to
``top_k``). A ``fraction`` of the training tracks is chosen by a hash of the track_id, so the
same tracks are chosen on every run and machine and a smaller fraction is a subset of a larger
one (the training-set-size sweep of :mod:`trainer.compare`); another ``subset`` number hashes
anew and chooses other tracks (the comparison's seeds each draw their own).
"""

from __future__ import annotations

import dataclasses
import json
from posixpath import join  # local paths and gs:// URIs alike, without Beam

import tensorflow as tf

from model import dsp
from model import features as schema  # "features" names the opened directory below
from runtime.errors import TagscaleError
from runtime.machine import usable_cores

SHARD_KIND = schema.SHARD_KIND
INPUT_FEATURE = schema.INPUT_FEATURE
METADATA_FILE = "metadata.json"
TRANSFORM_DIRS = ("transform_fn", "transformed_metadata")
FRACTION_BUCKETS = 1_000_000
# Fixed parallelism and prefetch depth, and tf.data's autotuning off: with it on, Keras'
# deletion of each epoch's iterator sometimes waited seconds on tf.data's autotuning thread,
# with the process idle, whenever another training process shared the cores (the comparison's
# lanes: epochs of 12 s took 20-33 s; BENCHMARKS.md "The comparison's lanes stalled at every
# epoch's end").
PREFETCH_BATCHES = 2
MAX_PARSE_CALLS = 8


def parse_calls() -> int:
    """Batches parsed at once: one per core this process may use, at most ``MAX_PARSE_CALLS``."""
    return max(1, min(usable_cores(), MAX_PARSE_CALLS))


class FeaturesDirError(TagscaleError):
    """A features directory that cannot be trained on; the message names what is missing."""


@dataclasses.dataclass(frozen=True)
class Features:
    """A checked features directory: where it is and what its metadata says."""

    path: str
    metadata: dict
    # (mean, std) per mel band: with them the log-mel is read back unstandardised (--no-standardise)
    band_stats: tuple | None = None

    @property
    def tags(self) -> list[str]:
        return list(self.metadata["tags"])

    @property
    def n_tags(self) -> int:
        return len(self.metadata["tags"])

    @property
    def top_k(self) -> int:
        return int(self.metadata["top_k"])

    def split_examples(self, split: str) -> int:
        return int(self.metadata.get("splits", {}).get(split, {}).get("examples", 0))

    def split_tracks(self, split: str) -> int:
        return int(self.metadata.get("splits", {}).get(split, {}).get("tracks", 0))


def split_shard_paths(features_dir: str, kind: str, split: str, metadata: dict) -> list[str]:
    """The shard files of one kind (``mel`` / ``waveform``) and split that ``metadata`` lists."""
    return [join(features_dir, name) for name in metadata.get("files", {}).get(kind, {}).get(split, [])]


def open_features(
    features_dir: str, frontends=("waveform", "spectrogram"), *, need_transform: bool = False
) -> Features:
    """Check a features directory for training ``frontends`` and read its metadata.

    Raises
    ------
    FeaturesDirError
        Naming the first missing piece: ``metadata.json``, the shards of a split of the kind a
        front-end reads, or (``need_transform``) the tf.Transform output.
    """
    features_dir = features_dir.rstrip("/") if features_dir not in ("/", "") else features_dir
    if not tf.io.gfile.isdir(features_dir):
        raise FeaturesDirError(f"features directory {features_dir} does not exist (run `tagscale featurize` first)")
    metadata_path = join(features_dir, METADATA_FILE)
    if not tf.io.gfile.exists(metadata_path):
        raise FeaturesDirError(f"{features_dir} is not a features directory: missing {METADATA_FILE}")
    try:
        with tf.io.gfile.GFile(metadata_path) as handle:
            metadata = json.load(handle)
    except json.JSONDecodeError as error:
        raise FeaturesDirError(f"{metadata_path} is not valid JSON: {error}") from None
    for key in ("tags", "top_k", "files"):
        if key not in metadata:
            raise FeaturesDirError(f"{metadata_path} has no {key!r}: not written by `tagscale featurize`")
    if not metadata["tags"]:
        raise FeaturesDirError(f"{metadata_path} has an empty tag vocabulary: the catalog has no tags to learn")
    for frontend in frontends:
        kind = SHARD_KIND[frontend]
        for split in schema.SPLITS:
            files = split_shard_paths(features_dir, kind, split, metadata)
            if not files or not all(tf.io.gfile.exists(path) for path in files):
                raise FeaturesDirError(
                    f"{features_dir} has no {split} shards for the {frontend} front-end: "
                    f"missing {kind}/{split}-*.tfrecord (listed in {METADATA_FILE})"
                )
    if need_transform:
        for name in TRANSFORM_DIRS:
            if not tf.io.gfile.isdir(join(features_dir, name)):
                raise FeaturesDirError(
                    f"{features_dir} has no tf.Transform output: missing {name}/ (the spectrogram export needs it)"
                )
    return Features(path=features_dir, metadata=metadata)


def keep_track(track_ids, fraction: float, subset: int = 0):
    """Whether each track is in the first ``fraction`` of tracks, by a hash of its id (and of
    ``subset`` when it is not 0: another subset of the same size).

    ``tf.strings.to_hash_bucket_fast`` is a fixed fingerprint (FarmHash), the same in the
    tf.data graph and in eager calls on any machine; ``fraction`` 0.3 keeps a superset of 0.1.

    Parameters
    ----------
    track_ids : tf.Tensor of tf.string, any shape
    fraction : float in (0, 1]
    subset : int
        0: the hash of the id alone; any other number: the hash of ``"{subset}:{id}"``.

    Returns
    -------
    tf.Tensor of tf.bool, same shape
    """
    if subset:
        track_ids = tf.strings.as_string(tf.constant(subset, tf.int64)) + ":" + track_ids
    buckets = tf.strings.to_hash_bucket_fast(track_ids, FRACTION_BUCKETS)
    return buckets < int(round(fraction * FRACTION_BUCKETS))


def check_fraction(fraction: float) -> float:
    if not 0 < fraction <= 1:
        raise TagscaleError(f"training fraction must be in (0, 1], got {fraction!r}")
    return float(fraction)


def make_dataset(
    features: Features,
    split: str,
    frontend: str,
    *,
    batch_size: int,
    training: bool = False,
    fraction: float = 1.0,
    subset: int = 0,
    seed: int = 0,
    shuffle_buffer: int = 512,
    with_ids: bool = False,
    n_examples: int | None = None,
) -> tf.data.Dataset:
    """Batches of ``(inputs, labels)`` (or a dict with ids) from the shards of one split.

    Files are interleaved in parallel; with ``training`` the file order and the examples are
    shuffled (records are shuffled while still serialized, then parsed a batch at a time).

    Parameters
    ----------
    features : Features
        From :func:`open_features`.
    split : {"train", "valid", "test"}
    frontend : {"waveform", "spectrogram"}
    batch_size : int
    training : bool
        Shuffle files and examples (reshuffled every epoch); not deterministic in order.
    fraction : float
        Keep only the tracks selected by :func:`keep_track` (any split; used on ``train``).
    subset : int
        Which hashed subset of that size (:func:`keep_track`).
    seed : int
        Seed of the shuffles.
    shuffle_buffer : int
        Examples in the shuffle buffer (a waveform example is 96 kB serialized).
    with_ids : bool
        Yield dicts ``{"inputs", "labels", "track_id", "patch_index"}`` (for evaluation).
    n_examples : int, optional
        The number of examples it holds (:func:`count_split`), declared as its cardinality.

    Returns
    -------
    tf.data.Dataset
        ``inputs``: (batch, 48128) waveform or (batch, 187, 96) log-mel, float32;
        ``labels``: (batch, n_tags) float32 multi-hot.
    """
    if split not in schema.SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {schema.SPLITS}")
    if frontend not in SHARD_KIND:
        raise ValueError(f"unknown frontend {frontend!r}; choose one of {sorted(SHARD_KIND)}")
    check_fraction(fraction)
    kind, feature = SHARD_KIND[frontend], INPUT_FEATURE[frontend]
    files = split_shard_paths(features.path, kind, split, features.metadata)
    if not files:
        raise FeaturesDirError(f"{features.path}: missing {kind}/{split}-*.tfrecord (listed in {METADATA_FILE})")
    spec = schema.shard_feature_spec(kind, features.top_k)
    wanted = {name: spec[name] for name in (feature, "labels", *(("track_id", "patch_index") if with_ids else ()))}
    n_tags = features.n_tags

    dataset = tf.data.Dataset.from_tensor_slices(files)
    if training and len(files) > 1:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    cycle = min(len(files), 8)
    dataset = dataset.interleave(
        lambda path: tf.data.TFRecordDataset(path, buffer_size=4 << 20),
        cycle_length=cycle,
        block_length=4,
        **({"num_parallel_calls": cycle, "deterministic": not training} if cycle > 1 else {}),
    )
    if fraction < 1.0:
        track_spec = {"track_id": spec["track_id"]}
        dataset = dataset.filter(
            lambda record: keep_track(tf.io.parse_single_example(record, track_spec)["track_id"], fraction, subset)
        )
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if n_examples is not None:  # lets Keras show and plan steps per epoch from the first epoch on
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(-(-n_examples // batch_size)))

    def parse(records):
        parsed = tf.io.parse_example(records, wanted)
        labels = parsed["labels"][:, :n_tags]  # featurize pads labels to top_k
        signal = schema.decode_signal(kind, parsed[feature])
        if with_ids:
            return {
                "inputs": signal,
                "labels": labels,
                "track_id": parsed["track_id"],
                "patch_index": parsed["patch_index"],
            }
        return signal, labels

    if kind == "mel" and features.band_stats is not None:
        mean, std = (tf.constant(values, tf.float32) for values in features.band_stats)
        standardised = parse

        def parse(records):
            parsed = standardised(records)
            if with_ids:
                return {**parsed, "inputs": parsed["inputs"] * std + mean}
            return parsed[0] * std + mean, parsed[1]

    dataset = dataset.map(parse, num_parallel_calls=parse_calls(), deterministic=not training)
    options = tf.data.Options()
    options.deterministic = not training
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.autotune.enabled = False  # nothing to tune (see PREFETCH_BATCHES), and no tuning thread
    return dataset.with_options(options).prefetch(PREFETCH_BATCHES)


def band_statistics(features: Features) -> tuple[list[float], list[float]]:
    """The training split's per-band ``(mean, std)`` that featurize standardised the log-mel with,
    read back from its tf.Transform output: the transform is ``(x - mean) / std`` per band, so
    it maps 0 to ``-mean / std`` and 1 to ``(1 - mean) / std``."""
    import numpy as np
    import tensorflow_transform as tft

    layer = tft.TFTransformOutput(features.path).transform_features_layer()
    shape = [dsp.PATCH_FRAMES, dsp.N_MELS]
    probe = tf.stack([tf.zeros(shape), tf.ones(shape)])
    zero, one = np.asarray(layer({"log_mel": probe})["log_mel"], np.float64)[:, 0, :]
    std = 1.0 / (one - zero)
    return (-zero * std).tolist(), std.tolist()


def track_patches(features: Features, split: str, *, fraction: float = 1.0, subset: int = 0) -> dict[bytes, int]:
    """``{track_id: number of patches}`` of the tracks of a split kept by ``fraction`` (one pass over
    the mel shards, or the waveform shards when there are none, reading only the track ids)."""
    check_fraction(fraction)
    spec = {"track_id": tf.io.FixedLenFeature([], tf.string)}
    files = split_shard_paths(features.path, "mel", split, features.metadata) or split_shard_paths(
        features.path, "waveform", split, features.metadata
    )
    dataset = (
        tf.data.TFRecordDataset(files).batch(1024).map(lambda records: tf.io.parse_example(records, spec)["track_id"])
    )
    counts: dict[bytes, int] = {}
    for batch in dataset:
        kept = keep_track(batch, fraction, subset).numpy() if fraction < 1.0 else [True] * len(batch)
        for track, keep in zip(batch.numpy(), kept):
            if keep:
                counts[track] = counts.get(track, 0) + 1
    return counts


def count_split(features: Features, split: str, *, fraction: float = 1.0, subset: int = 0) -> dict:
    """Tracks and examples of a split (of its ``fraction``): from metadata.json when the whole
    split is used, else from :func:`track_patches`."""
    check_fraction(fraction)
    if fraction >= 1.0:
        return {"tracks": features.split_tracks(split), "examples": features.split_examples(split)}
    counts = track_patches(features, split, fraction=fraction, subset=subset)
    return {"tracks": len(counts), "examples": sum(counts.values())}
