"""Shared test fixtures: real audio made on the fly, the repo's real clips, featurized demo catalogs,
a small serving model, clean interpreter exit.

Helpers that test files import by name live beside this file: made.py (synthesized audio, a small
model), featurized.py (demo features and the tiny network), tag_runs.py (hand-made tag runs),
explore_run.py, read_only.py, gcs_emulator.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import pathlib
import sys
import threading

import pytest
from made import small_model_dir, synth_tone

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_AUDIO = REPO.parent / "shared" / "audio" / "librosa_examples"


def pytest_collection_modifyitems(config, items):
    """A test that asks for a fixture named ``browser`` drives chromium, in whichever file it is:
    marked ``browser`` so that ``make test-fast`` leaves it out."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


BEAM_RUNS: dict[str, int] = {}  # test id -> Beam pipelines it ran in this process


def _count_beam_runs() -> None:
    """Wrap ``Pipeline.run`` once Beam is imported, to count the pipelines each test runs here
    (a TestPipeline stage or a whole job; not those of a subprocess). Beam is not imported for it."""
    module = sys.modules.get("apache_beam.pipeline")
    if module is None or hasattr(module.Pipeline.run, "counted_by_conftest"):
        return
    run, depth = module.Pipeline.run, threading.local()

    def counted(self, *args, **kwargs):
        depth.n = getattr(depth, "n", 0) + 1  # run() may call run() on a copy of the pipeline: count once
        try:
            if depth.n == 1:
                test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]
                BEAM_RUNS[test] = BEAM_RUNS.get(test, 0) + 1
            return run(self, *args, **kwargs)
        finally:
            depth.n -= 1

    counted.counted_by_conftest = True
    module.Pipeline.run = counted


def pytest_runtest_setup(item):
    _count_beam_runs()


def pytest_sessionfinish(session):
    # An xdist worker hands its counts to the controller, which prints the summary.
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["beam_runs"] = dict(BEAM_RUNS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """xdist: add a finished worker's Beam counts to this (the controller's) tally."""
    WORKERS_REPORTED.append(node)
    for test, runs in getattr(node, "workeroutput", {}).get("beam_runs", {}).items():
        BEAM_RUNS[test] = BEAM_RUNS.get(test, 0) + runs


WORKERS_REPORTED: list = []  # xdist workers whose counts BEAM_RUNS holds


def pytest_terminal_summary(terminalreporter):
    if BEAM_RUNS:
        where = f"{len(WORKERS_REPORTED)} worker processes" if WORKERS_REPORTED else "this process"
        terminalreporter.write_line(
            f"Beam pipelines run in {where}: {sum(BEAM_RUNS.values())}, by {len(BEAM_RUNS)} tests"
        )


def pytest_unconfigure(config):
    # A process that ran tf.Transform can segfault in interpreter teardown, after all work is done.
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def musicnn_cache(tmp_path_factory) -> str:
    """The session's tagscale cache folder, where the musicnn wheel is downloaded once.

    The tests only read it. Under pytest-xdist the workers of one run share it: the first to
    need a file fetches it under a file lock (:func:`cache_lock`), the others then find it there.
    """
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return str(tmp_path_factory.mktemp("tagscale_cache"))
    shared = tmp_path_factory.getbasetemp().parent / "tagscale_cache"  # this run's, shared by its workers
    shared.mkdir(exist_ok=True)
    return str(shared)


@contextlib.contextmanager
def cache_lock(cache: str):
    """An exclusive lock on ``cache`` for the length of a ``with`` block (fetches are no-ops once done)."""
    with open(os.path.join(cache, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def musicnn_package(musicnn_cache) -> str:
    """The musicnn 0.1.0 wheel's ``musicnn/`` package unpacked (pip download; no conversion)."""
    from model import pretrained

    with cache_lock(musicnn_cache):
        return pretrained.unpack_wheel(pretrained.download_wheel(musicnn_cache), musicnn_cache)


@pytest.fixture(scope="session")
def pretrained_cache(musicnn_cache) -> str:
    """A cache with both pretrained musicnn models fetched (one pip download per session)."""
    from model import pretrained

    with cache_lock(musicnn_cache):
        pretrained.fetch(cache_dir=musicnn_cache)
    return musicnn_cache


@pytest.fixture(scope="session")
def real_clips() -> list[pathlib.Path]:
    """The real CC-licensed / public-domain clips in ../shared (read-only)."""
    clips = sorted((SHARED_AUDIO / "audio").glob("*.ogg"))
    if not clips:
        pytest.fail(f"no real clips found under {SHARED_AUDIO}")
    return clips


@pytest.fixture
def write_audio(tmp_path):
    """Write synthesized audio in a given format with soundfile; returns the path."""
    import soundfile

    formats = {
        ".wav": ("WAV", "PCM_16"),
        ".flac": ("FLAC", "PCM_16"),
        ".ogg": ("OGG", "VORBIS"),
        ".mp3": ("MP3", "MPEG_LAYER_III"),
    }

    def write(name: str, seconds: float = 4.0, sample_rate: int = 44100, channels: int = 2, seed: int = 0):
        path = tmp_path / name
        fmt, subtype = formats[path.suffix]
        soundfile.write(
            path,
            synth_tone(seconds, sample_rate, channels=channels, seed=seed),
            sample_rate,
            format=fmt,
            subtype=subtype,
        )
        return path

    return write


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> str:
    """:func:`small_model_dir`, made once per session for the tests that only read it."""
    return small_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def demo_features(tmp_path_factory) -> pathlib.Path:
    """:func:`featurized.make_demo_features`: 400 demo tracks featurized (a Beam run: mark users slow)."""
    from featurized import make_demo_features

    return make_demo_features(tmp_path_factory)


@pytest.fixture(scope="session")
def small_features(tmp_path_factory) -> pathlib.Path:
    """:func:`featurized.make_small_features`: 48 demo tracks featurized (a Beam run: mark users slow)."""
    from featurized import make_small_features

    return make_small_features(tmp_path_factory)


@pytest.fixture(scope="session")
def tagged_demo(tmp_path_factory, pretrained_cache) -> dict:
    """:func:`tag_runs.make_tagged_demo`: 200 demo tracks tagged by musicnn-mtt (a Beam run: mark users slow)."""
    from tag_runs import make_tagged_demo

    return make_tagged_demo(tmp_path_factory.mktemp("tagged_demo"), pretrained_cache)
