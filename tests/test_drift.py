"""diff: known shifts found in edited copies of a musicnn-mtt run, none in a run against itself; its
report folder follows tag's output rules; a read-only one is one line."""

import os
import pathlib

import numpy as np
import pyarrow
import pyarrow.parquet as pq
import pytest
from tag_runs import TAGGED_DEMO_TRACKS, small_run

from infra.cli import main as cli
from runfolder import manifest
from runfolder.schema import TAGS_SCHEMA
from tagruns import diff as drift
from tagruns import tagdata


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


@pytest.mark.root
def test_a_read_only_output_is_one_line(runs, tmp_path):
    from read_only import run_read_only

    (tmp_path / "ro").mkdir()
    result = run_read_only(tmp_path / "ro", [*runs, "--output", str(tmp_path / "ro" / "report")])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"tagscale diff: error: cannot write to {tmp_path}/ro/report: "
        f"{tmp_path}/ro is read-only or not writable by this user"
    )


def edited_copy(tags_dir: str, target: pathlib.Path, *, drop: int, scale_tag: str, swap_embeddings: int) -> None:
    """A copy of a run with known edits: the first ``drop`` tracks gone, one tag's scores halved,
    the embeddings of the next ``swap_embeddings`` tracks taken from other tracks."""
    rows = pq.read_table(manifest.tag_files(tags_dir)[0]).to_pylist()[drop:]
    for row in rows:
        row["scores"] = sorted(
            ({"tag": s["tag"], "score": s["score"] * (0.5 if s["tag"] == scale_tag else 1.0)} for s in row["scores"]),
            key=lambda s: -s["score"],
        )
    for i in range(swap_embeddings):
        rows[i]["embedding"] = rows[-1 - i]["embedding"]
    (target / "tags").mkdir(parents=True)
    pq.write_table(pyarrow.Table.from_pylist(rows, schema=TAGS_SCHEMA), target / "tags" / "run-edited.parquet")


@pytest.mark.slow
def test_diff_of_a_run_with_itself_says_nothing_changed(tagged_demo, tmp_path, capsys):
    assert (
        cli(
            ["diff", "--tags", tagged_demo["tags"], "--tags", tagged_demo["tags"], "--output", str(tmp_path / "report")]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith(f"no change: {TAGGED_DEMO_TRACKS} tracks and 50 tags identical")
    assert "**No change**" in (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "report" / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_diff_reports_known_shifts(tagged_demo, tmp_path, capsys):
    edited = tmp_path / "edited"
    edited_copy(tagged_demo["tags"], edited, drop=5, scale_tag="guitar", swap_embeddings=10)
    a, b = tagdata.load(tagged_demo["tags"]), tagdata.load(str(edited))
    result = drift.compare(a, b)
    assert result["changed"] and result["only_a"] == 5 and result["only_b"] == 0
    by_tag = {e["tag"]: e for e in result["per_tag"]}
    common_rows = [a.row(t) for t in result["common_tracks"]]
    guitar = a.scores[common_rows, a.tags.index("guitar")].astype(np.float64)
    assert by_tag["guitar"]["shift"] == pytest.approx(-0.5 * guitar.mean(), abs=1e-6)
    assert by_tag["guitar"]["spearman"] == pytest.approx(1.0)  # halving keeps the order
    assert all(e["shift"] == 0 and e["spearman"] == 1.0 for t, e in by_tag.items() if t != "guitar")
    moved = np.flatnonzero(result["cosine_shift"] > 1e-6)
    assert set(moved.tolist()) <= set(range(10)) and len(moved) >= 9  # two tracks may share an embedding by chance only

    def top3(s):
        return {t for t, _ in sorted(s.items(), key=lambda kv: -kv[1])[:3]}

    expected = [
        t
        for t in result["common_tracks"]
        if top3(dict(zip(a.tags, a.scores[a.row(t)]))) != top3(dict(zip(b.tags, b.scores[b.row(t)])))
    ]
    assert [c["track_id"] for c in result["top_changed"]] == expected and expected
    assert (
        cli(["diff", "--tags", tagged_demo["tags"], "--tags", str(edited), "--output", str(tmp_path / "report")]) == 1
    )
    assert capsys.readouterr().out.startswith(
        f"changed: {TAGGED_DEMO_TRACKS - 5} tracks in both runs (5 only in A, 0 only in B)"
    )
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| guitar |" in report and "![drift](drift.png)" in report
    assert (tmp_path / "report" / "drift.png").stat().st_size > 10_000


def test_diff_needs_exactly_two_runs(runs, tmp_path, capsys):
    assert cli([*runs[:3], "--output", str(tmp_path / "r")]) == 2
    assert err_line(capsys) == "tagscale diff: error: give --tags exactly twice (A and B), got 1"
    assert not (tmp_path / "r").exists()
