"""Multi-worker training: two worker processes on 127.0.0.1 (CPU, collectives over loopback) on demo
features; only the chief writes; a kill of one worker and a restart of both resumes; the export tags."""

from __future__ import annotations

import json
import os
import pathlib
import signal as signals
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from featurized import TINY

from trainer import multiworker

REPO = pathlib.Path(__file__).resolve().parents[1]
EPOCHS = 4


def test_tf_config_names_the_workers_and_the_chief():
    assert multiworker.worker_count({}) == 0 and multiworker.is_chief({})
    vertex = {
        "cluster": {"chief": ["c:2222"], "worker": ["w0:2222", "w1:2222"], "evaluator": ["e:2222"]},
        "task": {"type": "worker", "index": 0},
    }
    assert multiworker.worker_count(vertex) == 3  # the evaluator does not train
    assert not multiworker.is_chief(vertex)  # worker 0 is not the chief when there is one
    assert multiworker.is_chief({**vertex, "task": {"type": "chief", "index": 0}})
    plain = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}
    assert multiworker.is_chief(plain) and not multiworker.is_chief({**plain, "task": {"type": "worker", "index": 1}})
    assert multiworker.tf_config({"TF_CONFIG": json.dumps(plain)}) == plain and multiworker.tf_config({}) == {}


@pytest.mark.slow
def test_the_steps_take_any_replica_batch_including_an_empty_one():
    """A worker whose shard ran out gets empty batches while the others finish theirs: the steps
    must take them (and add nothing), as well as full and partial batches."""
    import keras
    import tensorflow as tf

    from model import network

    strategy = tf.distribute.get_strategy()
    model = network.build_model("waveform", 3, backend_filters=8, dense_units=16)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    spec = (tf.TensorSpec((None, model.input_shape[1]), tf.float32), tf.TensorSpec((None, 3), tf.float32))
    train_step, eval_step, metrics = multiworker.make_steps(strategy, model, optimizer, 3, False, spec, spec)
    rng = np.random.default_rng(0)

    def batch(n):
        inputs = rng.standard_normal((n, model.input_shape[1])).astype("float32") * 0.1
        return tf.constant(inputs), tf.constant((rng.random((n, 3)) < 0.5).astype("float32"))

    before = [v.numpy() for v in model.trainable_variables]
    assert float(train_step(batch(0))) == 0.0 and float(eval_step(batch(0))) == 0.0
    for old, variable in zip(before, model.trainable_variables):  # zero gradients: Adam moves nothing
        np.testing.assert_array_equal(variable.numpy(), old)
    for n in (4, 3, 1):  # a full batch, then partial ones
        assert np.isfinite(float(train_step(batch(n)))) and np.isfinite(float(eval_step(batch(n))))
    assert any(np.any(v.numpy() != old) for old, v in zip(before, model.trainable_variables))


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def launch(features, job, scratch_dirs, logs) -> list[subprocess.Popen]:
    """Both workers of a 2-worker cluster (worker 0 is the chief), each with its own TMPDIR and log."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    command = [sys.executable, "-m", "trainer.task", "--features", str(features), "--frontend", "waveform"]
    command += ["--job-dir", str(job), *TINY, "--epochs", str(EPOCHS)]
    processes = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}),
            "TMPDIR": str(scratch_dirs[index]),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_NUM_INTRAOP_THREADS": "1",  # two processes on the test machine's cores
            "TF_NUM_INTEROP_THREADS": "1",
        }
        handle = open(logs[index], "w")
        processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT))
        handle.close()
    return processes


def checkpoint_epoch(state_dir: pathlib.Path) -> int:
    """The finished-epoch count stored in the latest checkpoint of ``state_dir`` (0: none yet)."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(state_dir))
    if not latest:
        return 0
    return int(tf.train.load_checkpoint(latest).get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE"))


def epoch_lines(text: str, label: str) -> list[int]:
    prefix = f"[{label}] epoch "
    return [int(line[len(prefix) :].split("/")[0]) for line in text.splitlines() if line.startswith(prefix)]


def worker_scratch(path: pathlib.Path) -> list[pathlib.Path]:
    return sorted(path.glob("tagscale-worker-*"))


@pytest.mark.slow
def test_two_workers_resume_after_a_kill_only_the_chief_writes_and_the_export_tags(small_features, tmp_path):
    job = tmp_path / "job"
    scratch = [tmp_path / "tmp0", tmp_path / "tmp1"]
    for path in scratch:
        path.mkdir()
    logs = [tmp_path / "chief.log", tmp_path / "worker.log"]
    processes = launch(small_features, job, scratch, logs)
    try:
        # Kill worker 1 once the chief has a checkpoint: the code under test has run an epoch.
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and all(p.poll() is None for p in processes):
            if checkpoint_epoch(job / "checkpoints") >= 1:
                break
            time.sleep(0.05)
        assert all(p.poll() is None for p in processes), "a worker ended early:\n" + logs[0].read_text()[-3000:]
        # While training, the worker saves its checkpoints only into its own scratch directory.
        assert [list(path.glob("ckpt-*")) for path in worker_scratch(scratch[1])][0]
        assert not worker_scratch(scratch[0])
        processes[1].send_signal(signals.SIGKILL)
        processes[1].wait(timeout=30)
    finally:  # the chief would wait for its peer in the next all-reduce: stop it too
        for process in processes:
            if process.poll() is None:
                process.send_signal(signals.SIGKILL)
                process.wait(timeout=30)
    killed_at = checkpoint_epoch(job / "checkpoints")
    assert 1 <= killed_at < EPOCHS and not (job / "eval.json").exists()
    leftover = worker_scratch(scratch[1])  # a SIGKILL leaves the killed worker's scratch behind

    processes = launch(small_features, job, scratch, logs)
    for process in processes:
        process.wait(timeout=400)
    chief, worker = (log.read_text() for log in logs)
    assert [p.returncode for p in processes] == [0, 0], chief[-3000:] + worker[-3000:]

    # Resumed: both started after the checkpointed epoch and ran to the end.
    assert f"resuming after epoch {killed_at} from" in chief and f"resuming after epoch {killed_at} from" in worker
    assert epoch_lines(chief, "waveform f1") == list(range(killed_at + 1, EPOCHS + 1))
    assert epoch_lines(worker, "waveform f1 worker 1") == list(range(killed_at + 1, EPOCHS + 1))
    assert "the chief evaluates and writes" in worker and "wrote " in chief
    history = json.loads((job / "history.json").read_text())
    assert sorted(map(int, history)) == list(range(EPOCHS)) and all("val_loss" in e for e in history.values())

    # The chief alone wrote: eval.json, the model and the export in the job dir; the worker's scratch is gone.
    evaluation = json.loads((job / "eval.json").read_text())
    assert evaluation["epochs_trained"] == EPOCHS and 0 <= evaluation["best_epoch"] < EPOCHS
    assert evaluation["settings"]["workers"] == 2 and evaluation["settings"]["replicas"] == 2
    assert sorted(p.name for p in job.iterdir()) == ["eval.json", "export", "history.json", "model.keras"]
    assert worker_scratch(scratch[1]) == leftover and not worker_scratch(scratch[0])

    # The export serves with `tagscale tag` on a few tracks of the catalog.
    catalog = small_features.parent / "catalog" / "catalog.csv"
    few = tmp_path / "few.csv"
    few.write_text("".join(catalog.read_text().splitlines(keepends=True)[:5]))
    tagged = subprocess.run(
        [sys.executable, "-m", "infra.cli", "tag", "--catalog", str(few), "--model", str(job / "export")]
        + ["--output", str(tmp_path / "tags"), "--batch-size", "4"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tagged.returncode == 0, tagged.stderr[-3000:]
    summary = json.loads((tmp_path / "tags" / "summary.json").read_text())
    assert (summary["tagged"], summary["failed"]) == (4, 0)
    import pyarrow.parquet as pq

    from runfolder import manifest

    rows = pq.read_table(manifest.tag_files(str(tmp_path / "tags"))).to_pylist()
    assert sorted(row["track_id"] for row in rows) == [f"demo-0000{i}" for i in range(4)]
    for row in rows:
        assert {s["tag"] for s in row["scores"]} == set(evaluation["tags"])
        assert all(0 <= s["score"] <= 1 for s in row["scores"])
