"""The spill: decoded tracks on disk between featurize's stages, so only small records cross them.

Beam's local runner keeps every PCollection that crosses a stage boundary (a GroupByKey, a
side-input barrier, tf.Transform's analyze pass before its transform) in memory. Featurize
therefore writes each decoded track once, here, and passes on a :class:`TrackRef` of a few
hundred bytes; the analyze pass and the shard writers read the track back one at a time.

A spill file holds a track's patches back to back: the int16 PCM waveform patches
(``n x 48,128`` little-endian int16, as the shards store them) then the log-mel patches
before normalisation (``n x 187 x 96`` little-endian float32). A track with frames after its
last whole patch (``TrackRef.tail_frames``) has one more row of each: its tail patch
(:func:`model.dsp.tail_patch`). It lives under
``OUTPUT/tmp/spill/`` (local or gs://, through Beam's FileSystems) and goes with ``tmp/``.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from model import dsp, features
from pipelines.storage import fileio

WAVEFORM_BYTES = dsp.PATCH_SAMPLES * 2  # int16 per patch
LOG_MEL_BYTES = dsp.PATCH_FRAMES * dsp.N_MELS * 4  # float32 per patch


@dataclasses.dataclass(frozen=True, order=True)
class TrackRef:
    """What crosses featurize's stage boundaries for one decoded track (ordered by track_id)."""

    track_id: str
    split: str
    n_patches: int
    seconds: float
    tags: tuple[str, ...]
    path: str
    tail_frames: int = 0  # frames after the last whole patch, kept for random crops (a tail patch)


def spill_path(spill_dir: str, track_id: str) -> str:
    """One file per track, named by a hash of its id (any id is a safe file name then)."""
    return fileio.join(spill_dir, hashlib.sha256(track_id.encode("utf-8", "surrogateescape")).hexdigest() + ".bin")


class LogMel:
    """``dsp.log_mel_patches`` as one traced TensorFlow function (no per-op eager dispatch)."""

    def __init__(self):
        import tensorflow as tf

        # No Python control flow to convert: without autograph the one trace takes ~0.1 instead
        # of ~0.5 CPU s, a few percent of a small run's fixed cost.
        self._fn = tf.function(
            dsp.log_mel_patches,
            input_signature=[tf.TensorSpec([None, dsp.PATCH_SAMPLES], tf.float32)],
            autograph=False,
        )

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        return self._fn(patches).numpy()


def write_track(path: str, patches: np.ndarray, log_mel: np.ndarray) -> None:
    """Write one track's int16 waveform patches and raw log-mel patches to ``path``."""
    from apache_beam.io.filesystems import CompressionTypes, FileSystems

    with FileSystems.create(
        path, mime_type="application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED
    ) as handle:
        handle.write(features.waveform_pcm(patches).tobytes())
        handle.write(np.ascontiguousarray(log_mel, "<f4").tobytes())


def read_track(ref: TrackRef, *, with_tail: bool = False):
    """A spilled track: ``(pcm (n, 48128) int16, log_mel (n, 187, 96) float32)``; with
    ``with_tail`` also its tail patch ``(pcm (48128,), log_mel (187, 96))``, or None."""
    from apache_beam.io.filesystems import CompressionTypes, FileSystems

    with FileSystems.open(ref.path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        data = handle.read()
    n = ref.n_patches
    rows = n + (1 if ref.tail_frames else 0)
    if len(data) != rows * (WAVEFORM_BYTES + LOG_MEL_BYTES):
        raise IOError(f"spill file {ref.path} has {len(data)} bytes, expected {rows} patches")
    pcm = np.frombuffer(data, "<i2", rows * dsp.PATCH_SAMPLES).reshape(rows, dsp.PATCH_SAMPLES)
    log_mel = np.frombuffer(data, "<f4", offset=rows * WAVEFORM_BYTES).reshape(rows, dsp.PATCH_FRAMES, dsp.N_MELS)
    if not with_tail:
        return pcm[:n], log_mel[:n]
    return pcm[:n], log_mel[:n], ((pcm[n], log_mel[n]) if ref.tail_frames else None)


def raw_record_batch(ref: TrackRef, log_mel: np.ndarray):
    """The raw tf.Transform input of one track: an Arrow RecordBatch with one row per patch
    (:func:`model.features.raw_arrow_schema`); the log-mel stays one contiguous buffer."""
    import pyarrow as pa

    count = ref.n_patches

    def lists(values: pa.Array, per_row: int) -> pa.Array:
        return pa.LargeListArray.from_arrays(pa.array(np.arange(count + 1) * per_row, pa.int64()), values)

    tags = [tag.encode("utf-8", "surrogateescape") for tag in ref.tags]
    return pa.RecordBatch.from_arrays(
        [
            lists(pa.array([ref.track_id.encode("utf-8", "surrogateescape")] * count, pa.large_binary()), 1),
            lists(pa.array(np.arange(count), pa.int64()), 1),
            lists(pa.array(log_mel.reshape(-1), pa.float32()), dsp.PATCH_FRAMES * dsp.N_MELS),
            lists(pa.array(tags * count, pa.large_binary()), len(tags)),
        ],
        schema=features.raw_arrow_schema(),
    )
