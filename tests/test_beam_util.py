"""How featurize and tag build their Beam pipeline: the local runner, flags passed through, decode
threads from the cores this process may use. Nothing here runs a pipeline."""

import os
import subprocess
import sys

import pytest

from pipelines import beam_util


def test_local_runs_go_straight_to_the_fn_api_runner_and_dataflow_is_not_local():
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    for args in ([], ["--runner", "DirectRunner"], ["--runner=FnApiRunner"]):
        assert isinstance(beam_util.make_pipeline(args).runner, FnApiRunner), args
        assert beam_util.is_local(args)
    dataflow = ["--runner", "DataflowRunner", "--project", "p", "--region", "r", "--dry_run=True"]
    assert not beam_util.is_local(dataflow) and beam_util.is_dry_run(dataflow)
    assert not beam_util.is_dry_run([])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores")
def test_decode_threads_share_the_usable_cores_among_local_workers():
    cores = sorted(os.sched_getaffinity(0))
    seen = {}
    try:
        for n in (1, 2):
            os.sched_setaffinity(0, cores[:n])  # as taskset pins a process; this thread only
            seen[n] = [
                beam_util.decode_threads(args)
                for args in ([], ["--direct_num_workers", "2"], ["--runner", "DataflowRunner"])
            ]
    finally:
        os.sched_setaffinity(0, cores)
    assert seen == {1: [1, 1, 1], 2: [2, 1, 1]}


def test_a_beam_job_process_starts_tensorflow_without_sklearn_or_matplotlib():
    code = (
        "from pipelines import beam_util\n"
        "beam_util.skip_unused_imports()\n"
        "import tensorflow, sys\n"
        "print(sorted(m for m in ('sklearn', 'matplotlib') if sys.modules.get(m) is not None))\n"
        "try:\n    import sklearn\nexcept ImportError:\n    print('refused')\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cwd = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[:2] == ["[]", "refused"]
