"""tag --segments: one row per patch beside the track table, in the same manifest; kept consistent
by incremental runs; read by `query when`, the `segments` view and the explorer's segments API."""

import json
import urllib.error
import urllib.request

import numpy as np
import pyarrow.parquet as pq
import pytest
from made import SMALL_MODEL_TAGS as TAGS
from made import synth_tone

from model import dsp
from pipelines import tag
from runfolder import layout, manifest, provenance, segments
from runtime.errors import TagscaleError, run_command
from tagruns import query

SECONDS = {"short": 2.0, "mid": 7.0, "long": 10.5, "other": 4.0}


def write_catalog(root, names):
    import soundfile

    lines = ["track_id,uri"]
    for i, name in enumerate(names):
        path = root / f"{name}.wav"
        if not path.exists():
            soundfile.write(path, synth_tone(SECONDS[name], 16000, channels=1, seed=i)[:, 0], 16000)
        lines.append(f"{name},{path}")
    catalog = root / f"catalog-{'-'.join(names)}.csv"
    catalog.write_text("\n".join(lines) + "\n")
    return catalog


def run_tag(catalog, model, output, *extra):
    return tag.run(["--catalog", str(catalog), "--model", model, "--output", str(output), "--batch-size", "4", *extra])


def manifest_of(output):
    return json.loads((output / "tags" / "manifest.json").read_text())


def segment_rows(output):
    files = manifest.segment_files(str(output))
    return sorted(
        (row for path in files for row in pq.read_table(path).to_pylist()),
        key=lambda row: (row["track_id"], row["start_s"]),
    )


def track_rows(output):
    return {row["track_id"]: row for path in manifest.tag_files(str(output)) for row in pq.read_table(path).to_pylist()}


@pytest.fixture(scope="module")
def segmented(tmp_path_factory, small_model):
    root = tmp_path_factory.mktemp("segments")
    output = root / "out"
    catalog = write_catalog(root, ["short", "mid", "long"])
    summary = run_tag(catalog, small_model, output, "--segments", "--num-shards", "2")
    return {"root": root, "output": output, "summary": summary}


@pytest.mark.slow
def test_one_segment_row_per_patch_with_its_time_span_and_scores(segmented):
    output = segmented["output"]
    tracks, rows = track_rows(output), segment_rows(output)
    assert segmented["summary"]["segments"] is True
    for track_id, track in tracks.items():
        mine = [row for row in rows if row["track_id"] == track_id]
        n = dsp.n_patches(int(SECONDS[track_id] * dsp.SAMPLE_RATE))
        assert len(mine) == track["n_patches"] == n
        assert [row["start_s"] for row in mine] == [round(k * 47872 / 16000, 3) for k in range(n)]
        assert [row["end_s"] for row in mine] == [min(round((k + 1) * 2.992, 3), SECONDS[track_id]) for k in range(n)]
        assert all(row["end_s"] <= track["duration_s"] for row in mine)
        assert [[item["tag"] for item in row["scores"]] for row in mine] == [TAGS] * n  # vocabulary order
        # The track's score is the mean of its patches' scores: the same numbers, two tables.
        means = np.mean([[item["score"] for item in row["scores"]] for row in mine], axis=0)
        want = {item["tag"]: item["score"] for item in track["scores"]}
        np.testing.assert_allclose(means, [want[name] for name in TAGS], atol=1e-6)
    assert {row["track_id"]: row["end_s"] for row in rows}["short"] == 2.0  # one padded patch, ends with the track


@pytest.mark.slow
def test_segment_files_are_sharded_by_track_and_listed_in_the_manifest_with_provenance(segmented):
    output = segmented["output"]
    listed = manifest_of(output)
    assert len(listed["files"]) == 2 and len(listed["segments"]) == 2
    assert all(name.startswith("segments-run-") for name in listed["segments"])
    on_disk = sorted(path.name for path in (output / "tags").glob("*.parquet"))
    assert on_disk == sorted(listed["files"] + listed["segments"])
    assert manifest.tag_files(str(output)) == [str(output / "tags" / name) for name in listed["files"]]
    for name in listed["segments"]:
        file = pq.ParquetFile(output / "tags" / name)
        shard, count = int(name[-22:-17]), int(name[-13:-8])
        ids = set(file.read().column("track_id").to_pylist())
        assert all(layout.shard_of(track_id, count) == shard for track_id in ids)
        metadata = file.schema_arrow.metadata
        assert json.loads(metadata[b"tagscale.tags"]) == TAGS
        origin = json.loads(metadata[provenance.METADATA_KEY.encode()])
        assert origin == {**listed["provenance"], "catalog": {**listed["provenance"]["catalog"], "rows": 3}}


@pytest.mark.slow
def test_incremental_runs_keep_one_segment_row_per_patch(segmented, small_model, tmp_path):
    root, output = segmented["root"], tmp_path / "out"
    catalog = write_catalog(root, ["short", "mid", "long"])
    run_tag(catalog, small_model, output, "--segments")
    before = segment_rows(output)
    # Same catalog again: every track skipped, no segment row added or lost.
    again = run_tag(catalog, small_model, output, "--segments", "--incremental")
    assert again["skipped"] == 3 and segment_rows(output) == before
    # Without --segments over an output that has them: segments are written for the new track too.
    more = run_tag(write_catalog(root, ["short", "mid", "long", "other"]), small_model, output, "--incremental")
    assert more["tagged"] == 1 and more["segments"] is True
    after = segment_rows(output)
    assert [row for row in after if row["track_id"] != "other"] == before
    assert len([row for row in after if row["track_id"] == "other"]) == track_rows(output)["other"]["n_patches"] == 1
    listed = manifest_of(output)  # each run adds one file of each table (an all-skipped run's is empty)
    assert len(listed["segments"]) == len(listed["files"]) == 3


@pytest.mark.slow
def test_segments_over_tracks_tagged_without_them_is_refused_and_changes_nothing(segmented, small_model, tmp_path):
    root, output = segmented["root"], tmp_path / "out"
    run_tag(write_catalog(root, ["short"]), small_model, output)
    assert manifest.segment_files(str(output)) is None
    before = sorted((path.name, path.read_bytes()) for path in (output / "tags").iterdir())
    with pytest.raises(TagscaleError, match="tagged without --segments"):
        run_tag(write_catalog(root, ["short", "mid"]), small_model, output, "--segments", "--incremental")
    assert sorted((path.name, path.read_bytes()) for path in (output / "tags").iterdir()) == before
    # A full rerun with --segments replaces the output: then every track has its rows.
    run_tag(write_catalog(root, ["short", "mid"]), small_model, output, "--segments")
    assert sorted({row["track_id"] for row in segment_rows(output)}) == ["mid", "short"]


def run_query(capsys, *argv):
    code = run_command("query", query.main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_query_when_prints_the_merged_ranges_above_the_threshold(segmented, capsys, tmp_path):
    from explore_run import write_thresholds

    output = str(segmented["output"])
    rows = [row for row in segment_rows(segmented["output"]) if row["track_id"] == "long"]
    scores = [{item["tag"]: item["score"] for item in row["scores"]} for row in rows]
    tag_name = "high"
    middle = float(np.float32(scores[1][tag_name]))
    # A threshold at the middle patch's score: the ranges are the patches at or above it, merged.
    code, out, err = run_query(capsys, "--tags", output, "--json", "when", "long", tag_name, "--threshold", str(middle))
    assert code == 0, err
    found = json.loads(out)
    above = [row for row, score in zip(rows, scores) if np.float32(score[tag_name]) >= np.float32(middle)]
    expected = []
    for row in above:
        if expected and expected[-1]["end_s"] == row["start_s"]:
            expected[-1]["end_s"] = row["end_s"]
        else:
            expected.append({"start_s": row["start_s"], "end_s": row["end_s"]})
    assert found["track_id"] == "long" and found["tag"] == tag_name and found["threshold"] == middle
    assert [{k: r[k] for k in ("start_s", "end_s")} for r in found["ranges"]] == expected
    assert max(r["max_score"] for r in found["ranges"]) == round(max(s[tag_name] for s in scores), 4)
    code, out, _ = run_query(capsys, "--tags", output, "when", "long", tag_name, "--threshold", "0")
    assert code == 0 and out == f"0.000-{rows[-1]['end_s']:.3f} s  max {max(s[tag_name] for s in scores):.4f}\n"
    code, out, err = run_query(capsys, "--tags", output, "when", "long", tag_name, "--threshold", "1.5")
    assert code == 0 and out == "" and "below 1.5" in err
    # A calibrated threshold from a `tagscale calibrate` file instead.
    thresholds = write_thresholds(tmp_path / "thresholds.json", {tag_name: middle}, model=("small", "v"))
    code, out, err = run_query(  # --json after the query, as `query --tags RUN when TRACK_ID TAG --json`
        capsys, "--tags", output, "when", "long", tag_name, "--thresholds", str(thresholds), "--json"
    )
    assert code == 0 and json.loads(out) == found, err
    code, out, err = run_query(capsys, "--tags", output, "when", "long", "low", "--thresholds", str(thresholds))
    assert code == 2 and "has no threshold for 'low'" in err


@pytest.mark.slow
def test_query_when_errors_are_one_line_and_exit_2(segmented, capsys, tmp_path):
    output = str(segmented["output"])
    for argv, message in (
        (["when", "nope", "high"], "unknown track 'nope': not in the segments table"),
        (["when", "long", "nope"], "unknown tag 'nope'; the tags are: low, mid, high"),
    ):
        code, out, err = run_query(capsys, "--tags", output, *argv)
        assert code == 2 and out == "" and err == f"tagscale query: error: {message}\n", err
    plain = tmp_path / "plain"
    (plain / "tags").mkdir(parents=True)
    for path in manifest.tag_files(output):
        (plain / "tags" / path.rsplit("/", 1)[-1]).write_bytes(open(path, "rb").read())
    code, _, err = run_query(capsys, "--tags", str(plain), "when", "long", "high")
    assert code == 2 and "no segments table" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_the_segments_view_has_one_column_per_tag(segmented):
    connection = query.connect(str(segmented["output"]))
    result = connection.execute("SELECT * FROM segments WHERE track_id = 'mid' ORDER BY start_s")
    assert [d[0] for d in result.description] == ["track_id", "start_s", "end_s", *TAGS]
    rows = result.fetchall()
    stored = [row for row in segment_rows(segmented["output"]) if row["track_id"] == "mid"]
    assert [row[1:3] for row in rows] == [(row["start_s"], row["end_s"]) for row in stored]
    assert [list(row[3:]) for row in rows] == [[item["score"] for item in row["scores"]] for row in stored]


def test_ranges_merge_touching_patches_and_compare_in_float32():
    rows = [(0.0, 2.992, 0.7), (2.992, 5.984, 0.9), (5.984, 8.976, 0.2), (8.976, 10.0, float(np.float32(0.7)))]
    assert segments.ranges(rows, 0.7) == [
        {"start_s": 0.0, "end_s": 5.984, "max_score": 0.9},
        {"start_s": 8.976, "end_s": 10.0, "max_score": 0.7},
    ]
    assert segments.span(3, 10.0) == (8.976, 10.0) and segments.span(0, 1.2345) == (0.0, 1.234)


def get(server, path):
    try:
        with urllib.request.urlopen(server.url.rstrip("/") + path, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
def test_segments_api_gives_a_tracks_segments_or_404(segmented, tmp_path):
    from explore_run import write_run

    from infra.explore.query import Explorer
    from infra.explore.server import ExplorerServer

    write_run(tmp_path / "plain", tracks=4)
    explorer = Explorer.open([str(segmented["output"]), str(tmp_path / "plain")])
    server = ExplorerServer(explorer, "127.0.0.1", 0, quiet=True)
    server.start()
    try:
        status, body = get(server, "/api/tracks/long/segments")
        stored = [row for row in segment_rows(segmented["output"]) if row["track_id"] == "long"]
        assert status == 200 and body["tags"] == TAGS
        assert body["segments"] == [
            {"start_s": row["start_s"], "end_s": row["end_s"], "scores": [item["score"] for item in row["scores"]]}
            for row in stored
        ]
        assert get(server, "/api/tracks/long")[1]["segments"] is True
        assert get(server, "/api/tracks/trk-001")[1]["segments"] is False
        for track_id in ("trk-001", "nope"):  # a run without segments; no such track
            status, body = get(server, f"/api/tracks/{track_id}/segments")
            assert status == 404 and "no segments" in body["error"]
    finally:
        server.stop()
        explorer.close()
