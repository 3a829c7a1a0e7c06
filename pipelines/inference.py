"""Batched model inference for the tag pipeline, overlapped with decoding.

Beam's ``RunInference`` calls the model in the same thread that decodes the next track, so on
DirectRunner a core sat idle while a file was decoded and the decoder waited while the model
ran. :class:`RunInference` here batches patches the same way (a fixed batch shape), but hands
each full batch to a small thread pool and keeps reading input; TensorFlow and the decoders
release the GIL, so decoding, the model and a second model call run at the same time.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np

from model import dsp, export
from pipelines import ordered_pool
from runtime.machine import bfloat16_unavailable, set_tf_threads, share_of_cores, usable_cores

# Batches handed to the pool and not yet emitted; bounds memory (a batch of 16 patches is 3 MB).
MAX_IN_FLIGHT = 4


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas. TensorFlow runs a batch on many threads, and each thread's arena
    keeps the freed activation memory of the batches it served, so peak memory crept up with the
    number of batches (2.4 GB for 200 tracks, 4.0 GB for 2,000, BENCHMARKS.md); with two arenas
    it stays flat. No-op where glibc's mallopt is missing."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def default_workers() -> int:
    """Concurrent model calls: one per core, at most 2 (more only adds memory on CPU)."""
    return max(1, min(2, usable_cores()))


def configure_threads(workers: int) -> bool:
    """Split the cores between ``workers`` concurrent model calls: ``cores // workers`` TF threads
    per call instead of every call spreading over every core. On 2 cores, two calls of one thread
    each took 70 CPU ms per patch where two calls of two threads took 79 (BENCHMARKS.md). False,
    changing nothing, where TensorFlow's thread pools already exist in this process with another
    split."""
    return set_tf_threads(share_of_cores(workers), max(2, workers))


def load_model(model_dir: str, precision: str) -> export.ServingModel:
    """Load a serving model for inference; ``bfloat16`` switches on oneDNN's bfloat16 rewrite."""
    limit_malloc_arenas()
    if precision == "bfloat16" and (reason := bfloat16_unavailable()):
        raise ValueError(f"--precision bfloat16 cannot run on this worker: {reason}")
    if precision == "bfloat16":
        # oneDNN's graph rewrite runs convolutions and matmuls in bfloat16 (AMX / AVX512-BF16
        # CPUs); scores move by up to ~0.01 (BENCHMARKS.md). Process-wide, like the worker.
        import tensorflow as tf

        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    return export.load_serving_model(model_dir)


def predict_batch(model: export.ServingModel, keys: list, patches: list, batch_size: int) -> list:
    """``[(key, {"scores", "embedding"})]`` for up to ``batch_size`` patches.

    The model always sees ``batch_size`` rows (zero-padded): kernels are chosen by shape, so a
    patch's scores would otherwise change in the last bits with the batch it landed in, and
    re-runs would not reproduce their output exactly.
    """
    batch = np.zeros((batch_size, dsp.PATCH_SAMPLES), np.float32)
    batch[: len(patches)] = np.stack(patches)
    outputs = model.predict(batch)
    return [
        (key, {"scores": scores, "embedding": embedding})
        for key, scores, embedding in zip(keys, outputs["scores"], outputs["embedding"])
    ]


class _InferenceFn(ordered_pool.OrderedPoolFn):
    """(key, patch) -> (key, {"scores", "embedding"}), model calls on a thread pool."""

    def __init__(self, model_dir: str, batch_size: int, precision: str, workers: int | None):
        super().__init__(max_in_flight=MAX_IN_FLIGHT)
        self._model_dir = model_dir
        self._batch_size = batch_size
        self._precision = precision
        self._workers = workers

    def setup(self):
        self._batches = beam.metrics.Metrics.counter("tagscale_inference", "num_batches")
        self._patches = beam.metrics.Metrics.counter("tagscale_inference", "num_patches")
        workers = self._workers or default_workers()
        configure_threads(workers)
        self._model = load_model(self._model_dir, self._precision)
        self.start_pool(workers, "tagscale-inference")

    def start_bundle(self):
        super().start_bundle()
        self._keys, self._inputs = [], []

    def outputs(self, unused_context, result):
        return result

    def _batch(self):
        """The held-back patches as one model call's arguments; counted as a batch."""
        keys, inputs = self._keys, self._inputs
        self._keys, self._inputs = [], []
        self._batches.inc()
        self._patches.inc(len(keys))
        return predict_batch, self._model, keys, inputs, self._batch_size

    def process(self, element):
        key, patch = element
        self._keys.append(key)
        self._inputs.append(patch)
        if len(self._keys) == self._batch_size:
            yield from self.submit(None, *self._batch())
        else:
            yield from self.ready()

    def flush(self):
        if self._keys:
            self.enqueue(None, *self._batch())


class RunInference(beam.PTransform):
    """(key, waveform patch) -> (key, {"scores", "embedding"}) with a tagscale serving model.

    Parameters
    ----------
    model_dir : str
        A serving-model directory (:func:`model.export.load_serving_model`).
    batch_size : int
        Patches per model call (the last batch of a bundle is zero-padded to this size).
    precision : {"float32", "bfloat16"}
    workers : int, optional
        Concurrent model calls (default :func:`default_workers`).
    """

    def __init__(self, model_dir: str, *, batch_size: int = 16, precision: str = "float32", workers: int | None = None):
        super().__init__()
        self._fn = _InferenceFn(model_dir, batch_size, precision, workers)

    def expand(self, keyed_patches):
        return keyed_patches | "Predict" >> beam.ParDo(self._fn)
