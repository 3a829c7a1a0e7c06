"""One reader, one rule: every command that reads a tag run counts the same tracks in a hand-edited
run (a shard listed twice in the manifest, a track's row copied into a second file) and refuses
the same run (rows of two models in one folder) with the same one line."""

import json
import pathlib

import numpy as np
import pyarrow
import pyarrow.parquet as pq
import pytest

from infra.cli import main as cli
from runfolder import manifest
from runfolder.schema import TAGS_SCHEMA, tag_row
from runtime.errors import TagscaleError

TRACKS = 12
TAGS = ["a", "b"]


def rows(ids, *, model=("m", "v1"), seed=0):
    rng = np.random.default_rng(seed)
    return [
        tag_row(
            track_id=track_id,
            uri=f"/audio/{track_id}.mp3",
            model_name=model[0],
            model_version=model[1],
            duration_s=3.0,
            n_patches=1,
            tags=TAGS,
            scores=[0.9 if int(track_id[1:]) % 2 == 0 else 0.2, rng.random()],
            embedding=rng.normal(size=4),
        )
        for track_id in ids
    ]


def write_run(folder: pathlib.Path, files: dict, listed: list[str]) -> str:
    """``files`` (name -> rows) in ``folder/tags/``, the manifest listing ``listed``."""
    (folder / "tags").mkdir(parents=True)
    for name, file_rows in files.items():
        pq.write_table(pyarrow.Table.from_pylist(file_rows, schema=TAGS_SCHEMA), folder / "tags" / name)
    manifest.write_tags_manifest(str(folder / "tags"), listed, run_id="1")
    return str(folder)


def every_command(run: str, tmp: pathlib.Path, name: str) -> list[list[str]]:
    labels = tmp / "labels.csv"
    labels.write_text("track_id,tag\n" + "".join(f"t{i},{'a' if i % 2 == 0 else 'z'}\n" for i in range(TRACKS)))
    return [
        ["query", "--tags", run, "--json", "stats"],
        ["query", "--tags", run, "--json", "sql", "SELECT count(*) AS n, count(DISTINCT track_id) AS ids FROM tags"],
        ["similar", "--tags", run, "t0", "--k", "50", "--exact", "--json"],
        ["index", "--tags", run],
        ["probe", "train", "--tags", run, "--labels", str(labels), "--output", str(tmp / f"probe-{name}")],
        ["calibrate", "--tags", run, "--labels", str(labels), "--output", str(tmp / f"t-{name}.json")],
        ["evaluate", "--tags", run, "--labels", str(labels), "--json"],
        ["diff", "--tags", run, "--tags", run, "--output", str(tmp / f"diff-{name}")],
    ]


def explore_tracks(run: str) -> int:
    from infra.explore.query import Explorer

    explorer = Explorer.open([run])
    try:
        return explorer.stats()["tracks"]
    finally:
        explorer.close()


@pytest.mark.slow  # eight commands, each loading the run (about 10 s in all)
def test_every_command_reads_a_run_by_one_rule(tmp_path, capsys):
    ids = [f"t{i}" for i in range(TRACKS)]
    first, second = "run-1-00000-of-00002.parquet", "run-1-00001-of-00002.parquet"
    # A shard listed twice, and one track's row copied (older) into another listed file.
    doubled = write_run(
        tmp_path / "doubled",
        {first: rows(ids[:7]), second: rows(ids[7:]), "run-0-00000-of-00001.parquet": rows(ids[:1], seed=9)},
        ["run-0-00000-of-00001.parquet", first, first, second],
    )
    for argv in every_command(doubled, tmp_path, "doubled"):
        code = cli(argv)
        out, err = capsys.readouterr()
        assert code in (0, 1) if argv[0] == "diff" else code == 0, (argv, err)
        if argv[:4] == ["query", "--tags", doubled, "--json"] and argv[4] == "stats":
            assert {record["tracks"] for record in json.loads(out)} == {TRACKS}
        elif argv[0] == "query":
            assert json.loads(out) == [{"n": TRACKS, "ids": TRACKS}]
        elif argv[0] == "similar":
            assert sorted(hit["track_id"] for hit in json.loads(out)) == sorted(ids[1:])  # every other track, once
        elif argv[0] == "index":
            assert out.startswith(f"indexed {TRACKS} tracks")
        elif argv[0] in ("probe", "calibrate"):
            assert f"{TRACKS} labelled tracks" in out or f'"labelled_tracks": {TRACKS}' in out, out
        elif argv[0] == "evaluate":
            assert json.loads(out)["tracks"] == TRACKS
        else:
            assert code == 0 and out.startswith(f"no change: {TRACKS} tracks"), out
    assert explore_tracks(doubled) == TRACKS
    # The newest row of t0 (the file listed later) is the one every reader sees.
    capsys.readouterr()
    assert cli(["query", "--tags", doubled, "--json", "track", "t0"]) == 0
    seen = {entry["tag"]: entry["score"] for entry in json.loads(capsys.readouterr().out)}
    newest, older = ({s["tag"]: s["score"] for s in rows(ids[:1], seed=seed)[0]["scores"]} for seed in (0, 9))
    assert seen["b"] == round(newest["b"], 4) != round(older["b"], 4)

    # Rows of two models in one folder (an --incremental run of another model, before it was refused).
    mixed = write_run(
        tmp_path / "mixed",
        {first: rows(ids), second: rows(ids, model=("msd", "v2"))},
        [first, second],
    )
    for argv in every_command(mixed, tmp_path, "mixed"):
        assert cli(argv) == 2, argv
        out, err = capsys.readouterr()
        assert err.strip().splitlines() == [
            f"tagscale {argv[0]}: error: the tag output in {mixed} holds rows of 2 models "
            "(m version v1, msd version v2): one model per run folder; tag each model into a folder of its own"
        ], argv
    with pytest.raises(TagscaleError, match="holds rows of 2 models"):
        explore_tracks(mixed)


def test_a_segments_run_without_its_manifest_counts_tracks_not_segment_rows(tmp_path, capsys):
    """A folder with no manifest is read by its Parquet files, less the segments table's."""
    from runfolder import segments

    run = tmp_path / "run"
    write_run(run, {"run-1-00000-of-00001.parquet": rows(["t0", "t1"])}, ["run-1-00000-of-00001.parquet"])
    patches = [(k, [0.5, 0.5]) for k in range(4)]
    segment_rows = segments.segment_rows("t0", patches, tags=TAGS, duration_s=12.0)
    pq.write_table(
        pyarrow.Table.from_pylist(segment_rows, schema=segments.schema_for(TAGS)),
        run / "tags" / "segments-run-1-00000-of-00001.parquet",
    )
    (run / "tags" / "manifest.json").unlink()
    assert cli(["query", "--tags", str(run), "--json", "sql", "SELECT count(*) AS n FROM tags"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 2}]
    assert explore_tracks(str(run)) == 2


@pytest.mark.slow  # loads a small model's info (TensorFlow)
def test_incremental_with_another_model_is_refused_and_writes_nothing(small_model, tmp_path, capsys):
    from model import export
    from pipelines.storage import ownership

    _, info = export.read_model_info(small_model)
    output = tmp_path / "run"
    write_run(output, {"run-1-00000-of-00001.parquet": rows(["t0", "t1"])}, ["run-1-00000-of-00001.parquet"])
    ownership.mark(str(output))
    ownership.mark(str(output / "tags"))
    before = {path: path.read_bytes() for path in output.rglob("*") if path.is_file()}
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("track_id,uri\nt2,/nowhere/t2.wav\n")
    argv = ["tag", "--catalog", str(catalog), "--model", small_model, "--output", str(output), "--incremental"]
    assert cli(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"tagscale tag: error: --incremental: {output} holds rows of m version v1, not "
        f"{info['name']} version {info['version']}: one model per run folder; tag into a new --output "
        "(tagscale diff compares two runs)"
    ]
    assert {path: path.read_bytes() for path in output.rglob("*") if path.is_file()} == before


def test_a_track_twice_in_one_file_keeps_its_last_row_in_every_reader(tmp_path, capsys):
    from tagruns import tagdata

    twice = rows(["t0", "t1"]) + rows(["t0"], seed=5)
    run = write_run(tmp_path / "run", {"run-1-00000-of-00001.parquet": twice}, ["run-1-00000-of-00001.parquet"])
    newest = {s["tag"]: s["score"] for s in twice[-1]["scores"]}
    assert cli(["query", "--tags", run, "--json", "sql", "SELECT count(*) AS n FROM tags"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 2}]
    assert cli(["query", "--tags", run, "--json", "track", "t0"]) == 0
    assert {e["tag"]: e["score"] for e in json.loads(capsys.readouterr().out)} == {
        tag: round(score, 4) for tag, score in newest.items()
    }
    table = tagdata.load(run)
    assert table.track_ids == ["t1", "t0"]
    assert table.scores[1].tolist() == [float(np.float32(newest[tag])) for tag in table.tags]
    assert explore_tracks(run) == 2
