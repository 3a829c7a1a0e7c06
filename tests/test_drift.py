"""diff's report folder follows tag's output rules; a read-only one is one line."""

import os

import numpy as np
import pytest
from test_beyond_tags import small_run

from infra.cli import main as cli


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(6, 4)).tolist()
    scores = [{"a": 0.1 * i, "b": 0.5} for i in range(6)]
    return [
        "diff",
        "--tags",
        small_run(tmp_path / "a", scores, embeddings),
        "--tags",
        small_run(tmp_path / "b", scores, embeddings),
    ]


def err_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_diff_writes_no_report_into_the_root_or_over_a_users_files(runs, tmp_path, capsys):
    before = {name: os.path.exists(f"/{name}") for name in ("report.md", "drift.png")}
    for spelling in ("/", "file:///"):
        assert cli([*runs, "--output", spelling]) == 2
        assert err_line(capsys) == (
            "tagscale diff: error: --output / is a filesystem root; choose a directory for tagscale's output"
        )
    assert {name: os.path.exists(f"/{name}") for name in before} == before
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "report.md").write_text("my report")
    (folder / "drift.png").write_bytes(b"my plot")
    assert cli([*runs, "--output", str(folder)]) == 2
    assert err_line(capsys) == (
        f"tagscale diff: error: --output {folder} holds files tagscale did not write (drift.png, report.md); "
        "choose a new or empty directory"
    )
    assert (folder / "report.md").read_text() == "my report" and (folder / "drift.png").read_bytes() == b"my plot"
    assert cli([*runs, "--output", runs[2]]) == 2  # into a run it reads
    assert "is or contains the input" in err_line(capsys)
    for _ in range(2):  # a new folder is the report's: the second diff replaces the first's files
        assert cli([*runs, "--output", f"file://{tmp_path}/new/"]) == 0
        assert "No change" in (tmp_path / "new" / "report.md").read_text()
    assert sorted(os.listdir(tmp_path / "new")) == [".tagscale-owned", "drift.png", "report.md"]


def test_a_read_only_output_is_one_line(runs, tmp_path):
    from read_only import run_read_only

    (tmp_path / "ro").mkdir()
    result = run_read_only(tmp_path / "ro", [*runs, "--output", str(tmp_path / "ro" / "report")])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"tagscale diff: error: cannot write to {tmp_path}/ro/report: "
        f"{tmp_path}/ro is read-only or not writable by this user"
    )
