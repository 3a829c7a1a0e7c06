"""Quiet commands: TensorFlow's C++ log lines and decoder notes stay off the terminal unless asked for."""

import os
import pathlib
import random
import subprocess
import sys

import pytest

from runtime import logs

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (b"I0000 00:00:1796243616.332231   24650 port.cc:153] oneDNN custom operations are on.", None),
        (b"E0000 00:00:1796243620.922317   24650 cuda_platform.cc:52] failed call to cuInit: INTERNAL", None),
        (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR", None),
        (b"Note: Illegal Audio-MPEG-Header 0x9d657eb8 at offset 13584.", None),
        (
            b"W0000 00:00:1796243620.1   24650 alloc.cc:83] Allocation of 9437184 exceeds 10% of free memory.",
            b"tagscale: warning: Allocation of 9437184 exceeds 10% of free memory.",
        ),
        (
            b"F0000 00:00:1796243620.1   24650 check.cc:1] Check failed: x",
            b"F0000 00:00:1796243620.1   24650 check.cc:1] Check failed: x",
        ),
        (b"tagscale tag: error: no such model", b"tagscale tag: error: no such model"),
        (b'  File "x.py", line 3, in <module>', b'  File "x.py", line 3, in <module>'),
    ],
)
def test_a_line_is_dropped_shortened_or_kept(line, shown):
    assert logs.filter_line(line) == shown


def _featurize(catalog, output, **env):
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", "featurize", "--catalog", str(catalog), "--output", str(output)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **env},
        timeout=600,
    )


@pytest.mark.slow
def test_featurize_prints_no_library_chatter_unless_asked(tmp_path, write_audio):
    """A damaged MP3 makes libmpg123 print notes; TensorFlow logs its start-up through absl.
    Both reach the terminal with TAGSCALE_LOG=debug, neither without it; the run's summary does."""
    good = write_audio("good.mp3", seconds=5.0)
    data = bytearray(pathlib.Path(good).read_bytes())
    rng = random.Random(1)
    for start in range(len(data) // 5, len(data), len(data) // 6):
        data[start : start + 400] = bytes(rng.randrange(256) for _ in range(len(data[start : start + 400])))
    damaged = tmp_path / "damaged.mp3"
    damaged.write_bytes(bytes(data))
    catalog = tmp_path / "catalog.csv"
    catalog.write_text(f"track_id,uri,tags\nd,{damaged},piano\ng,{good},piano\n")

    chatty = _featurize(catalog, tmp_path / "chatty", TAGSCALE_LOG="debug")
    assert chatty.returncode == 0, chatty.stderr[-2000:]
    assert "I0000" in chatty.stderr and "Note: " in chatty.stderr  # the lines exist on this stack

    quiet = _featurize(catalog, tmp_path / "quiet")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "featurized 2/2 tracks" in quiet.stdout
    for chatter in ("I0000", "E0000", "Note: ", "absl::InitializeLog"):
        assert chatter not in quiet.stderr, quiet.stderr
    assert quiet.stderr.strip() == ""


def test_a_library_caller_keeps_its_stderr():
    """cli.main(argv) called from Python leaves the caller's descriptor 2 alone."""
    code = (
        "import os, sys\n"
        "from infra import cli\n"
        "before = os.fstat(2).st_ino\n"
        "try:\n    cli.main(['query', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(before == os.fstat(2).st_ino)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.stdout.strip().splitlines()[-1] == "True", result.stderr[-2000:]


SEEN = []


def record_args(argv):
    """A stand-in subcommand: what it was given and whether logs were turned up."""
    SEEN.append((argv, os.environ.get("TAGSCALE_LOG")))
    return 0


@pytest.mark.parametrize(
    ("argv", "given", "log"),
    [
        (["--verbose", "probe-args", "a"], ["a"], "debug"),
        (["probe-args", "--verbose", "a"], ["a"], "debug"),
        (["probe-args", "a", "--verbose"], ["a"], "debug"),
        (["probe-args", "a"], ["a"], ""),
        (["probe-args", "a", "--", "--verbose"], ["a", "--", "--verbose"], ""),  # another program's flag
    ],
)
def test_verbose_turns_logs_up_before_or_after_the_command(monkeypatch, argv, given, log):
    from infra import cli

    monkeypatch.setenv("TAGSCALE_LOG", "")
    monkeypatch.setitem(cli.COMMANDS, "probe-args", (f"{__name__}:record_args", "records its arguments"))
    SEEN.clear()
    assert cli.main(argv) == 0
    assert SEEN == [(given, log)]


def test_after_train_and_compare_verbose_is_their_own_keras_verbosity():
    from infra import cli

    assert cli.take_verbose(["train", "--verbose", "2"]) == (["train", "--verbose", "2"], False)
    assert cli.take_verbose(["--verbose", "compare", "--verbose", "1"]) == (["compare", "--verbose", "1"], True)
    from trainer import compare, flags

    assert sorted(cli.OWN_VERBOSE) == ["compare", "train"]  # each has one (or the exception would hide ours):
    assert all(
        "--verbose" in parser._option_string_actions for parser in (flags.build_parser(), compare.build_parser())
    )
