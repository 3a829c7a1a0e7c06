"""The tag pipeline's RunInference: batches on a thread pool, outputs equal to the model's own call."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from model import dsp, export, network, serving
from pipelines import inference

TAGS = [f"tag{i}" for i in range(5)]


@pytest.fixture(scope="module")
def musicnn_like(tmp_path_factory):
    """A musicnn-preset Keras model with random weights, and its serving form (the fast graph) saved."""
    import keras

    keras.utils.set_random_seed(1)
    model = network.build_model("spectrogram", len(TAGS), "musicnn", dense_units=16)
    path = str(tmp_path_factory.mktemp("model") / "m")
    info = export.save_serving_model(
        serving.build_serving_module(model, "spectrogram"), path, tags=TAGS, info={"name": "m"}
    )
    assert info["serving_graph"] == export.FAST_GRAPH
    return {"keras": model, "path": path}


@pytest.fixture(scope="module")
def musicnn_like_model(musicnn_like) -> str:
    return musicnn_like["path"]


def patches(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.1, (n, dsp.PATCH_SAMPLES)).astype(np.float32)


@pytest.mark.slow
def test_run_inference_gives_every_patch_its_own_outputs(musicnn_like):
    """Against the Keras model itself, one patch at a time: another graph (the Keras layers, not the
    fast form the export serves) and no batch mates, so a patch mixed up with its neighbour, a
    padding row returned or a batch misordered shows."""
    data = patches(7)  # two full batches of 3 and a padded one
    keras_model = musicnn_like["keras"]
    alone = [keras_model(dsp.log_mel_patches(data[i : i + 1]), training=False) for i in range(len(data))]
    expected = {key: np.concatenate([np.asarray(out[key]) for out in alone]) for key in ("scores", "embedding")}
    keys = [("track", i) for i in range(len(data))]

    def check(results):
        results = dict(results)
        assert sorted(results) == keys
        for (_, i), outputs in results.items():
            # Measured against the Keras graph: 1.8e-7 on scores, 9e-7 on the embedding (float32 rounding).
            np.testing.assert_allclose(outputs["scores"], expected["scores"][i], atol=1e-6)
            np.testing.assert_allclose(outputs["embedding"], expected["embedding"][i], atol=4e-6)

    with TestPipeline() as pipeline:
        outputs = (
            pipeline
            | "Patches" >> beam.Create(list(zip(keys, data)))
            | "RunInference" >> inference.RunInference(musicnn_like["path"], batch_size=3, workers=2)
        )
        assert_that(outputs, check)


@pytest.mark.slow
def test_same_batch_same_bits_on_concurrent_threads(musicnn_like_model):
    """Re-runs are byte-identical: a batch gives the same bits whichever pool thread runs it and
    whatever runs beside it. (A patch moved to another batch position may change in the last bit:
    measured 6e-8 on the embedding, so batches are formed in input order, never by completion.)"""
    import concurrent.futures

    model = inference.load_model(musicnn_like_model, "float32")
    batches = [patches(4, seed=s) for s in (2, 3, 2, 3, 2)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda batch: inference.predict_batch(model, list(range(4)), list(batch), 4), batches))
    for first, again in ((0, 2), (0, 4), (1, 3)):
        for (_, a), (_, b) in zip(results[first], results[again]):
            np.testing.assert_array_equal(a["scores"], b["scores"])
            np.testing.assert_array_equal(a["embedding"], b["embedding"])
    moved = inference.predict_batch(model, ["x", "a"], [patches(1, seed=9)[0], batches[0][0]], 4)
    np.testing.assert_allclose(moved[1][1]["embedding"], results[0][0][1]["embedding"], atol=1e-6)


@pytest.mark.skipif(len(__import__("os").sched_getaffinity(0)) < 2, reason="needs 2 cores")
def test_default_workers_follow_the_cores_this_process_may_use():
    """Pinned to one core (as taskset does) a process makes one model call at a time, whatever the
    machine has; on two or more, two (a third call only adds memory on CPU)."""
    import os

    cores = sorted(os.sched_getaffinity(0))
    expected = {1: 1, 2: 2, 3: 2}
    seen = {}
    try:
        for n in (n for n in expected if n <= len(cores)):
            os.sched_setaffinity(0, cores[:n])  # this thread only, restored below
            seen[n] = inference.default_workers()
    finally:
        os.sched_setaffinity(0, cores)
    assert seen == {n: workers for n, workers in expected.items() if n <= len(cores)}


@pytest.mark.slow
@pytest.mark.skipif(len(__import__("os").sched_getaffinity(0)) < 2, reason="needs 2 cores")
def test_threads_are_split_between_the_concurrent_calls():
    """In a fresh process the TF pools take the split (2 cores: one call gets 2 threads, two calls
    1 each); once TensorFlow has run, nothing changes."""
    import os
    import subprocess
    import sys

    code = """
import tensorflow as tf
from pipelines import inference
threads = tf.config.threading
print(inference.configure_threads(1), threads.get_intra_op_parallelism_threads())
configured = inference.configure_threads(2)
print(configured, threads.get_intra_op_parallelism_threads(), threads.get_inter_op_parallelism_threads())
tf.constant(1.0) + 1.0
print(inference.configure_threads(1), threads.get_intra_op_parallelism_threads())
"""
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    out = subprocess.run(
        ["taskset", "-c", "0,1", sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    assert out == ["True", "2", "True", "1", "2", "False", "1"]
