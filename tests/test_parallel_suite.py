"""The fast suite across worker processes (pytest-xdist), as `make test-fast` runs it."""

import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow
def test_the_beam_run_count_adds_up_the_workers_counts():
    # test_stages' fast tests: three, one of them runs a Beam pipeline (a TestPipeline), in
    # whichever of the two workers gets it; the controller, which runs no test, prints the sum.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "-m", "not slow"]
        + ["tests/test_stages.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Beam pipelines run in 2 worker processes: 1, by 1 tests" in result.stdout
    assert "3 passed" in result.stdout
