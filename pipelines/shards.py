"""featurize's shard writers: spilled tracks -> sorted, byte-identical TFRecord shards.

Which shard a track goes to is a stable hash of its track_id; how many shards a split gets
follows its data volume (``target_bytes`` per file) unless fixed. Only :class:`TrackRef` s
are grouped by shard; each writer sorts its refs by track_id and streams the tracks from the
spill, a few at a time, through the tf.Transform graph into the files. Memory per writer is
therefore a few tracks, whatever the size of the catalog or of a shard.

Files: ``{output}/{mel,waveform}/{split}-SSSSS-of-NNNNN.tfrecord``, uncompressed (gzip of
audio-sized records cost a third of featurize's time and saves little on spectra and PCM).
"""

from __future__ import annotations

import dataclasses
import math

import apache_beam as beam
import numpy as np

from model import dsp, features
from pipelines import sharded, spill
from pipelines.storage import fileio
from runfolder import layout

KINDS = ("mel", "waveform")
DEFAULT_TARGET_BYTES = 256 * 2**20
TRANSFORM_BATCH_PATCHES = 64  # patches per call of the transform graph: amortises the call, bounds memory


def example_bytes(top_k: int) -> int:
    """Serialized size of the larger (waveform) example of one patch, within a few bytes."""
    return spill.WAVEFORM_BYTES + 4 * top_k + 128


def files_for(total_bytes: int, *, target_bytes: int) -> int:
    """How many files hold ``total_bytes`` at about ``target_bytes`` each: at least one."""
    return max(1, math.ceil(total_bytes / target_bytes))


def shard_count(examples: int, *, target_bytes: int, top_k: int) -> int:
    """Shards for a split of ``examples``: files of about ``target_bytes`` each, at least one."""
    return files_for(examples * example_bytes(top_k), target_bytes=target_bytes)


def shard_name(kind: str, split: str, shard: int, num_shards: int) -> str:
    """A shard's path relative to the features directory."""
    return f"{kind}/{split}-{shard:05d}-of-{num_shards:05d}.tfrecord"


def shard_files(counts: dict) -> dict:
    """Every shard file of a run, ``{kind: {split: [relative path, ...]}}``, from shard counts."""
    return {
        kind: {split: [shard_name(kind, split, i, n) for i in range(n)] for split, n in counts.items()}
        for kind in KINDS
    }


def encode_examples(
    track_id: bytes, patch_index: int, labels: np.ndarray, log_mel: np.ndarray, pcm: np.ndarray, tail=None
) -> tuple[bytes, bytes]:
    """One patch -> its serialized (mel, waveform) tf.train.Examples, with a deterministic
    map order so equal examples are equal bytes in every process. ``tail``: ``(log-mel frames,
    PCM samples)`` after the track's last patch, on that patch only (``features.TAIL_FEATURE``)."""
    from tensorflow.core.example import example_pb2

    out = []
    for kind, name, signal in (("mel", "log_mel", log_mel), ("waveform", "waveform", pcm)):
        example = example_pb2.Example()
        feature = example.features.feature
        feature["track_id"].bytes_list.value.append(track_id)
        feature["patch_index"].int64_list.value.append(patch_index)
        feature["labels"].float_list.value.extend(labels.tolist())
        feature[name].bytes_list.value.append(signal.tobytes())
        if tail is not None:
            feature[features.TAIL_FEATURE[kind]].bytes_list.value.append(tail[0 if kind == "mel" else 1].tobytes())
        out.append(example.SerializeToString(deterministic=True))
    return out[0], out[1]


class Transformer:
    """The written tf.Transform graph applied to spilled tracks (normalised log-mel + labels)."""

    def __init__(self, transform_dir: str):
        import tensorflow_transform as tft

        self._output = tft.TFTransformOutput(transform_dir)

    def __call__(self, refs: list, log_mels: list) -> tuple[np.ndarray, np.ndarray]:
        import tensorflow as tf

        counts = [ref.n_patches for ref in refs]
        rows = [
            (ref.track_id.encode("utf-8", "surrogateescape"), index) for ref in refs for index in range(ref.n_patches)
        ]
        tags = [
            [tag.encode("utf-8", "surrogateescape") for tag in ref.tags]
            for ref, count in zip(refs, counts)
            for _ in range(count)
        ]
        raw = {
            "track_id": tf.constant([track for track, _ in rows]),
            "patch_index": tf.constant([index for _, index in rows], tf.int64),
            "log_mel": tf.constant(np.concatenate(log_mels)),
            "tags": tf.RaggedTensor.from_row_lengths(
                tf.constant([t for row in tags for t in row], tf.string), [len(row) for row in tags]
            ).to_sparse(),
        }
        out = self._output.transform_raw_features(raw, drop_unused_features=True)
        return out["log_mel"].numpy(), out["labels"].numpy()


class TFRecordShards(sharded.ShardWriter):
    """Shard ``(split, shard)`` of a split's ``counts[split]`` -> its mel and waveform files,
    tracks sorted by id; ``counts`` is ``{split: num_shards}``."""

    def __init__(self, output: str, transform_dir: str):
        self._output = output
        self._transform_dir = transform_dir
        self._transformer = None

    def shard_key(self, ref, counts):
        return ref.split, layout.shard_of(ref.track_id, counts[ref.split])

    def every_shard(self, counts):
        return [(split, shard) for split in sorted(counts) for shard in range(counts[split])]

    def write(self, key, refs, counts, *unused_ready):
        import tensorflow as tf

        split, shard = key
        if self._transformer is None:  # after the side inputs: the transform is written by now
            self._transformer = Transformer(self._transform_dir)
        refs = sorted(refs)
        paths = [fileio.join(self._output, shard_name(kind, split, shard, counts[split])) for kind in KINDS]
        with tf.io.TFRecordWriter(paths[0]) as mel_writer, tf.io.TFRecordWriter(paths[1]) as wave_writer:
            for batch in _batches(refs):
                self._write_batch(batch, mel_writer, wave_writer)
        beam.metrics.Metrics.counter("featurize", "shards_written").inc()
        return paths

    def _write_batch(self, refs, mel_writer, wave_writer):
        tracks = [spill.read_track(ref, with_tail=True) for ref in refs]
        log_mel, labels = self._transformer(refs, [log_mel for _, log_mel, _ in tracks])
        tails = self._tails(refs, tracks)
        row = 0
        for ref, (pcm, _, _) in zip(refs, tracks):
            track_id = ref.track_id.encode("utf-8", "surrogateescape")
            for index in range(ref.n_patches):
                tail = tails.get(ref.track_id) if index == ref.n_patches - 1 else None
                mel, wave = encode_examples(track_id, index, labels[row], log_mel[row].astype("<f4"), pcm[index], tail)
                mel_writer.write(mel)
                wave_writer.write(wave)
                row += 1

    def _tails(self, refs, tracks) -> dict:
        """``{track_id: (normalised log-mel frames, PCM samples)}`` after each track's last patch:
        the last ``tail_frames`` frames of its tail patch, normalised as the patches."""
        with_tail = [(ref, track[2]) for ref, track in zip(refs, tracks) if track[2] is not None]
        if not with_tail:
            return {}
        one_patch = [dataclasses.replace(ref, n_patches=1) for ref, _ in with_tail]
        log_mel, _ = self._transformer(one_patch, [tail_mel[None] for _, (_, tail_mel) in with_tail])
        return {
            ref.track_id: (
                log_mel[i, -ref.tail_frames :].astype("<f4"),
                tail_pcm[-ref.tail_frames * dsp.HOP_LENGTH :],
            )
            for i, (ref, (tail_pcm, _)) in enumerate(with_tail)
        }


def _batches(refs: list):
    batch, patches = [], 0
    for ref in refs:
        if batch and patches + ref.n_patches > TRANSFORM_BATCH_PATCHES:
            yield batch
            batch, patches = [], 0
        batch.append(ref)
        patches += ref.n_patches
    if batch:
        yield batch


class ShardCounts(beam.PTransform):
    """TrackRefs -> one dict ``{split: number of shards}`` (every split, fixed or by volume)."""

    def __init__(self, *, num_shards: int | None, target_bytes: int, top_k: int):
        super().__init__()
        self._num_shards, self._target_bytes, self._top_k = num_shards, target_bytes, top_k

    def expand(self, refs):
        def counts(examples: dict) -> dict:
            if self._num_shards:
                return {split: self._num_shards for split in features.SPLITS}
            return {
                split: shard_count(examples.get(split, 0), target_bytes=self._target_bytes, top_k=self._top_k)
                for split in features.SPLITS
            }

        return (
            refs
            | "ExamplesBySplit" >> beam.Map(lambda ref: (ref.split, ref.n_patches))
            | "SumBySplit" >> beam.CombinePerKey(sum)
            | "ToDict" >> beam.combiners.ToDict()
            | "ShardsPerSplit" >> beam.Map(counts)
        )


class WriteShards(sharded.WriteSharded):
    """TrackRefs of every split -> shard files (paths out), each shard written even when empty.

    Parameters
    ----------
    output : str
        The features directory; ``{output}/mel`` and ``{output}/waveform`` receive the files.
    transform_dir : str
        Where ``transform_fn/`` is (written by then: see ``ready``).
    counts : PCollection of one ``{split: num_shards}`` dict (:class:`ShardCounts`).
    ready : PCollection, optional
        Anything that exists only once the transform is written (WriteTransformFn's output).
    """

    def __init__(self, output: str, transform_dir: str, counts, ready=None):
        side = [beam.pvalue.AsList(ready)] if ready is not None else []
        super().__init__(TFRecordShards(output, transform_dir), counts, side)
        self._output = output

    def expand(self, refs):
        import tensorflow as tf

        for kind in KINDS:
            tf.io.gfile.makedirs(fileio.join(self._output, kind))
        return super().expand(refs)
