"""Beam's portable worker contract: the job service and an SDK worker pool in processes of their
own (what Flink's and Spark's runners use), and the paths a job hands its workers.

The slow test starts ``local_job_service_main`` and ``worker_pool_main`` in a directory of their
own, runs ``tagscale featurize`` and ``tagscale tag`` through them from another directory with
relative paths, and compares every output with the DirectRunner's.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 600  # one featurize or tag run of 8 tracks: about 30 s on a loaded 2-core machine
# Largest portable-vs-direct difference allowed, in tag's scores and embeddings and featurize's
# band statistics. Measured: 0 for all three, on the default oneDNN path, with
# TF_ENABLE_ONEDNN_OPTS=0 and with ONEDNN_MAX_CPU_ISA=AVX2. Both runs are fresh processes on the
# same machine, so TensorFlow gets the same thread pools, and every model call has the same fixed
# batch shape. (A DirectRunner run inside a process where TensorFlow already runs keeps that
# process's pools, and its scores on the TF_ENABLE_ONEDNN_OPTS=0 path then differed.)
SCORE_BOUND = EMBEDDING_BOUND = STATISTICS_BOUND = 0.0


# ------------------------------------------------------------------ paths handed to workers


def test_beam_jobs_hand_their_workers_absolute_paths(tmp_path, monkeypatch):
    """A relative --output or model directory names another place (or none) in a worker that runs
    in its own directory: the commands make them absolute; URLs stay as they are."""
    from pipelines import beam_util, featurize, tag

    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    config, _ = featurize.parse_args(["--catalog", "c.csv", "--output", "out/"])
    assert config.output == str(tmp_path / "out")
    config, _ = tag.parse_args(["--catalog", "c.csv", "--model", "model", "--output", "tags"])
    assert (config.output, config.model) == (str(tmp_path / "tags"), str(tmp_path / "model"))
    assert beam_util.worker_path("gs://bucket/out") == "gs://bucket/out"
    assert beam_util.worker_path("file:///abs/out") == "file:///abs/out"


def test_relative_catalog_uris_are_resolved_where_the_command_runs(tmp_path, monkeypatch):
    """ReadCatalog's rows: a relative uri is made absolute against the directory the command ran
    in (given as ``base``), so a worker anywhere opens the same file; others are kept."""
    from pipelines import catalog

    path = tmp_path / "catalog.csv"
    path.write_text("track_id,uri\na,audio/a.wav\nb,../b.mp3\nc,/abs/c.ogg\nd,gs://bucket/d.flac\n")
    base = str(tmp_path / "launch")
    rows = [track for _, (_, track) in catalog.parse_rows(str(path), base)]
    assert [track.uri for track in rows] == [
        str(tmp_path / "launch" / "audio" / "a.wav"),
        str(tmp_path / "b.mp3"),
        "/abs/c.ogg",
        "gs://bucket/d.flac",
    ]
    assert [track.uri for _, (_, track) in catalog.parse_rows(str(path))][0] == "audio/a.wav"  # no base: as written


def test_decode_helper_imports_from_the_tree_it_was_started_from(monkeypatch):
    """The libsndfile helper is ``python -m pipelines.decode.helper`` with the folder that holds
    this ``pipelines`` package first on its PYTHONPATH, whatever the worker's directory."""
    from pipelines.decode import helper

    started = {}

    def popen(args, **kwargs):
        started.update(args=args, env=kwargs["env"])
        raise OSError("not started")

    monkeypatch.setattr(helper.subprocess, "Popen", popen)
    with pytest.raises(OSError):
        helper.Worker()
    first = started["env"]["PYTHONPATH"].split(os.pathsep)[0]
    assert started["args"][-1] == "pipelines.decode.helper"
    assert pathlib.Path(first, "pipelines", "decode", "helper.py").resolve() == pathlib.Path(helper.__file__).resolve()


# ------------------------------------------------------------------ the portable contract


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free now (each held until all are chosen)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("localhost", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def worker_env() -> dict:
    """This venv's bin/ first on PATH (the pool starts workers as ``python``), this checkout on
    PYTHONPATH (workers import its code)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def die_with_parent() -> None:
    """In the child, before it runs: SIGTERM when the test process dies, even if killed outright
    (Linux's PR_SET_PDEATHSIG; elsewhere only the finalizer stops the services)."""
    import ctypes

    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def start_service(request, args: list[str], port: int, cwd: pathlib.Path, log: pathlib.Path):
    """Start ``python -m ARGS`` in its own process group (stopped, with every worker it started,
    when the test ends however it ends) and wait until it accepts connections on ``port``."""
    handle = open(log, "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=worker_env(),
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )

    def stop():
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        handle.close()

    request.addfinalizer(stop)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{args[0]} exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("localhost", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{args[0]} did not listen on port {port} within {START_TIMEOUT_S} s")


@pytest.fixture(scope="module")
def portable(request, tmp_path_factory):
    """A job service and an SDK worker pool, both running in a directory of their own; yields the
    Beam flags that send a job to them and the pool's log."""
    where = tmp_path_factory.mktemp("services")
    job_port, pool_port = free_ports(2)
    start_service(
        request,
        ["apache_beam.runners.portability.local_job_service_main", "--port", str(job_port)],
        job_port,
        where,
        where / "job_service.log",
    )
    start_service(
        request,
        ["apache_beam.runners.worker.worker_pool_main", "--service_port", str(pool_port)],
        pool_port,
        where,
        where / "worker_pool.log",
    )
    flags = [
        "--runner",
        "PortableRunner",
        "--job_endpoint",
        f"localhost:{job_port}",
        "--environment_type",
        "EXTERNAL",
        "--environment_config",
        f"localhost:{pool_port}",
    ]
    return {"flags": flags, "pool_log": where / "worker_pool.log"}


@pytest.fixture(scope="module")
def launch(tmp_path_factory, small_model):
    """A folder to launch from, holding a catalog of 8 demo tracks (7 s: two patches each) and a
    missing file, every uri relative to that folder."""
    from infra.demo import catalog as demo_catalog

    root = tmp_path_factory.mktemp("portable")
    made = demo_catalog.make_demo_catalog(str(root / "demo"), n_tracks=8, seed=0, duration_s=7.0)
    launch = root / "launch"
    launch.mkdir()
    lines = pathlib.Path(made).read_text().splitlines()
    rows = [line.split(",", 2) for line in lines[1:]]
    relative = [f"{track_id},{os.path.relpath(uri, launch)},{tags}" for track_id, uri, tags in rows]
    (launch / "catalog.csv").write_text("\n".join([lines[0], *relative, "gone,missing.wav,drums"]) + "\n")
    os.symlink(small_model, launch / "model")
    return launch


def launched(command: list[str], cwd: pathlib.Path) -> float:
    """``tagscale COMMAND`` run as a user would, from ``cwd``; its wall time in seconds."""
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "infra.cli", *command],
        cwd=cwd,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seconds = time.monotonic() - start
    print(f"tagscale {command[0]} {command[command.index('--output') + 1]}: {seconds:.1f} s")
    return seconds


def workers_started(log: pathlib.Path) -> int:
    return log.read_text(errors="replace").count("Starting worker with command")


def band_statistics(features_dir: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """The per-band mean and standard deviation tf.Transform computed, read back through the
    transform: it maps x to (x - mean) / std, so 0 gives -mean/std and 1 gives (1 - mean)/std."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from model import dsp

    transform = tft.TFTransformOutput(str(features_dir))
    cells = np.stack([np.zeros((dsp.PATCH_FRAMES, dsp.N_MELS)), np.ones((dsp.PATCH_FRAMES, dsp.N_MELS))])
    out = transform.transform_raw_features({"log_mel": tf.constant(cells, tf.float32)}, drop_unused_features=True)
    zero, one = out["log_mel"].numpy().astype(np.float64)[:, 0]
    std = 1.0 / (one - zero)
    return -zero * std, std


def tag_rows(output: pathlib.Path) -> dict:
    import pyarrow.parquet as pq

    manifest = json.loads((output / "tags" / "manifest.json").read_text())
    files = [str(output / "tags" / name) for name in manifest["files"]]
    return {row["track_id"]: row for row in pq.read_table(files).to_pylist()}


@pytest.mark.slow
def test_featurize_and_tag_through_a_job_service_and_worker_pool(portable, launch):
    """Through the job service and the pool, from another directory with relative paths:
    featurize's shards, dead letters, vocabulary and schema equal the DirectRunner's byte for
    byte and its band statistics within STATISTICS_BOUND; tag's rows equal, scores and
    embeddings within SCORE_BOUND and EMBEDDING_BOUND."""
    featurize_flags = ["--catalog", "catalog.csv", "--top-k", "4", "--valid-fraction", "0.3", "--test-fraction", "0.3"]
    tag_flags = ["--catalog", "catalog.csv", "--model", "model", "--batch-size", "4"]
    pool_log = portable["pool_log"]
    before = workers_started(pool_log)
    launched(["featurize", *featurize_flags, "--output", "features_portable", *portable["flags"]], launch)
    after_featurize = workers_started(pool_log)
    launched(["tag", *tag_flags, "--output", "tags_portable", *portable["flags"]], launch)
    assert workers_started(pool_log) > after_featurize > before  # the pool ran both jobs
    # The DirectRunner's, from the same folder: a fresh process each, as the pool's workers are
    # (in a process where TensorFlow already runs, tag could not choose its thread count).
    launched(["featurize", *featurize_flags, "--output", "features_direct"], launch)
    launched(["tag", *tag_flags, "--output", "tags_direct"], launch)

    direct, port = launch / "features_direct", launch / "features_portable"
    meta = [json.loads((out / "metadata.json").read_text()) for out in (direct, port)]
    assert meta[0]["tracks_ok"] == 8 and meta[0]["tracks_failed"] == 1
    assert all(meta[0]["splits"][split]["tracks"] > 0 for split in meta[0]["splits"])
    assert {k: v for k, v in meta[0].items() if k != "config"} == {k: v for k, v in meta[1].items() if k != "config"}
    for kind in meta[0]["files"].values():
        for names in kind.values():
            for name in names:
                assert (direct / name).read_bytes() == (port / name).read_bytes(), name
    for name in ("transform_fn/assets/tags", "transformed_metadata/schema.pbtxt"):
        assert (direct / name).read_bytes() == (port / name).read_bytes(), name
    (mean_d, std_d), (mean_p, std_p) = band_statistics(direct), band_statistics(port)
    statistics = float(max(np.abs(mean_d - mean_p).max(), np.abs(std_d - std_p).max()))
    print(f"portable vs direct, band statistics' largest difference: {statistics}")
    assert statistics <= STATISTICS_BOUND

    import pyarrow.parquet as pq

    dead = [pq.read_table(out / "dead_letter").to_pylist() for out in (direct, port)]
    assert dead[0] == dead[1] and [row["track_id"] for row in dead[0]] == ["gone"]

    rows = [tag_rows(launch / out) for out in ("tags_direct", "tags_portable")]
    assert sorted(rows[0]) == sorted(rows[1]) == [f"demo-{i:05d}" for i in range(8)]
    differences = {"scores": 0.0, "embedding": 0.0}
    for track_id, row in rows[0].items():
        other = rows[1][track_id]
        assert row["uri"] == other["uri"] and os.path.isabs(row["uri"]) and os.path.exists(row["uri"])
        assert row["n_patches"] == other["n_patches"] == 2
        scores = [{s["tag"]: s["score"] for s in r["scores"]} for r in (row, other)]
        assert sorted(scores[0]) == sorted(scores[1])
        differences["scores"] = max(differences["scores"], max(abs(scores[0][t] - scores[1][t]) for t in scores[0]))
        embedding = np.abs(np.subtract(row["embedding"], other["embedding"])).max()
        differences["embedding"] = max(differences["embedding"], float(embedding))
    print(f"portable vs direct, largest difference: {differences}")
    assert differences["scores"] <= SCORE_BOUND and differences["embedding"] <= EMBEDDING_BOUND
