"""Tag output and dead letters as Parquet shards, and the manifests readers go by."""

import json
import os
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pyarrow
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from pipelines import dead_letter, tag_output
from runfolder import layout, manifest
from runfolder.schema import TAGS_SCHEMA, row_bytes
from runtime.errors import TagscaleError
from tagruns import tagdata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tag_rows(n, *, dim=200, n_tags=50, seed=0):
    """``n`` rows of musicnn's shape (200-d embedding, 50 tags), random values."""
    rng = np.random.default_rng(seed)
    tags = [f"tag {i}" for i in range(n_tags)]
    rows = []
    for i in range(n):
        scores = rng.random(n_tags).astype(np.float32)
        rows.append(
            {
                "track_id": f"track-{i:06d}",
                "uri": f"/audio/catalog/track-{i:06d}.mp3",
                "model": {"name": "m", "version": "v1"},
                "duration_s": 30.0,
                "n_patches": 10,
                "scores": [{"tag": tags[j], "score": float(scores[j])} for j in np.argsort(-scores)],
                "embedding": rng.standard_normal(dim).astype(np.float32).tolist(),
            }
        )
    return rows


def write_tags(rows, directory, **kwargs):
    with TestPipeline() as pipeline:
        _ = pipeline | beam.Create(rows) | tag_output.WriteTags(str(directory), "r1", TAGS_SCHEMA, **kwargs)
    return tag_output.run_files(str(directory), "r1")


@pytest.mark.slow
def test_target_bytes_split_tag_rows_into_files_of_about_that_size(tmp_path):
    rows = tag_rows(1500)
    estimate = sum(row_bytes(row) for row in rows)
    names = write_tags(rows, tmp_path, target_bytes=estimate // 4 + 1)
    assert names == [f"run-r1-{i:05d}-of-00004.parquet" for i in range(4)]
    sizes = [os.path.getsize(tmp_path / name) for name in names]
    # The estimate is the encoded size within 1% (measured 0.4%); a shard holds ~1/4 of the rows.
    assert abs(sum(sizes) - estimate) < 0.01 * estimate
    assert all(0.6 * estimate / 4 < size < 1.4 * estimate / 4 for size in sizes), sizes
    table = pq.read_table([str(tmp_path / name) for name in names])
    assert table.schema.equals(TAGS_SCHEMA)
    assert sorted(table.column("track_id").to_pylist()) == [row["track_id"] for row in rows]  # each once
    by_id = {row["track_id"]: row for row in table.to_pylist()}
    assert by_id["track-000007"] == rows[7]


def test_num_shards_forces_the_count_and_empty_shards_are_files_too(tmp_path):
    rows = tag_rows(2)
    names = write_tags(rows, tmp_path, num_shards=4)
    assert names == [f"run-r1-{i:05d}-of-00004.parquet" for i in range(4)]
    counts = [pq.ParquetFile(tmp_path / name).metadata.num_rows for name in names]
    assert sum(counts) == 2 and counts.count(0) >= 2  # shards without rows are written, empty


def test_a_missing_shard_is_not_a_finished_write(tmp_path):
    write_tags(tag_rows(3), tmp_path, num_shards=2)
    os.remove(tmp_path / "run-r1-00001-of-00002.parquet")
    with pytest.raises(RuntimeError, match="incomplete shards"):
        tag_output.run_files(str(tmp_path), "r1")


def test_dead_letters_are_sharded_by_bytes_and_listed_in_their_manifest(tmp_path):
    records = [
        dead_letter.record(track_id=f"t{i}", uri=f"/audio/t{i}.mp3", stage="decode", error=f"bad file {i}")
        for i in range(300)
    ]
    estimate = sum(dead_letter.record_bytes(record) for record in records)
    with TestPipeline() as pipeline:
        _ = pipeline | beam.Create(records) | dead_letter.WriteDeadLetter(str(tmp_path), target_bytes=estimate // 3 + 1)
    written = dead_letter.write_manifest(str(tmp_path), run_id="r1")
    assert written["files"] == [f"part-{i:05d}-of-00003.parquet" for i in range(3)]
    files = manifest.dead_letter_files(str(tmp_path))
    assert [path.rsplit("/", 1)[-1] for path in files] == written["files"]
    read = pq.read_table(files).to_pylist()
    assert sorted(read, key=lambda record: int(record["track_id"][1:])) == records
    # Reading the folder as a dataset, as users' scripts do, skips the manifest.
    assert pq.read_table(tmp_path / "dead_letter").num_rows == 300
    os.remove(tmp_path / "dead_letter" / layout.DEAD_LETTER_MANIFEST)  # a run from before the manifest
    assert manifest.dead_letter_files(str(tmp_path)) == files


def test_no_dead_letters_is_one_empty_file(tmp_path):
    with TestPipeline() as pipeline:
        _ = pipeline | beam.Create([]).with_output_types(dict) | dead_letter.WriteDeadLetter(str(tmp_path))
    dead_letter.write_manifest(str(tmp_path), run_id="r1")
    (path,) = manifest.dead_letter_files(str(tmp_path))
    assert pq.read_table(path).num_rows == 0 and pq.read_table(path).schema.equals(dead_letter.SCHEMA)


def write_run(folder, manifest_text):
    (folder / "tags").mkdir(parents=True)
    rows = tag_rows(2, dim=4, n_tags=3)
    pq.write_table(pyarrow.Table.from_pylist(rows, schema=TAGS_SCHEMA), folder / "tags" / "run-1.parquet")
    (folder / "tags" / "manifest.json").write_text(manifest_text)


BAD_MANIFESTS = {
    "not JSON": ("{files", "not JSON"),
    "files not a list": (json.dumps({"files": 5}), 'expected {"files": [file names]}'),
    "a list": (json.dumps(["run-1.parquet"]), 'expected {"files": [file names]}'),
    "an entry not a string": (json.dumps({"files": ["run-1.parquet", 7]}), "lists 7,"),
    "a path": (json.dumps({"files": ["../other/tags/run-1.parquet"]}), "lists '../other/tags/run-1.parquet'"),
    "an absolute path": (json.dumps({"files": ["/etc/x.parquet"]}), "lists '/etc/x.parquet'"),
    "a parent": (json.dumps({"files": [".."]}), "lists '..'"),
    "SQL": (json.dumps({"files": ["run.parquet']); COPY (SELECT 1) TO 'x'; --"]}), "lists \"run.parquet'])"),
    "a control character": (json.dumps({"files": ["run-1\x1b[2J.parquet"]}), r"lists 'run-1\x1b[2J.parquet'"),
    "a hidden file": (json.dumps({"files": [".tagscale-owned.parquet"]}), "lists '.tagscale-owned.parquet'"),
    "not Parquet": (json.dumps({"files": ["summary.json"]}), "lists 'summary.json'"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_a_malformed_manifest_is_a_clear_error_naming_it(tmp_path, case):
    text, message = BAD_MANIFESTS[case]
    write_run(tmp_path, text)
    path = str(tmp_path / "tags" / "manifest.json")
    for read in (manifest.manifest_files, manifest.tag_files, tagdata.load):
        with pytest.raises(TagscaleError, match="manifest") as error:
            read(str(tmp_path / "tags") if read is manifest.manifest_files else str(tmp_path))
        assert str(error.value).startswith(path) and message in str(error.value), str(error.value)


def test_plain_file_names_are_read(tmp_path):
    write_run(tmp_path, json.dumps({"files": ["run-1.parquet"], "run_id": "1"}))
    assert manifest.tag_files(str(tmp_path)) == [str(tmp_path / "tags" / "run-1.parquet")]
    assert tagdata.load(str(tmp_path)).track_ids == ["track-000000", "track-000001"]


def test_query_on_a_malformed_manifest_prints_one_line_and_exits_2(tmp_path):
    write_run(tmp_path, json.dumps({"files": ["run.parquet']); COPY (SELECT 42) TO 'pwned.csv'; --"]}))
    result = subprocess.run(
        [sys.executable, "-m", "tagruns.query", "--tags", str(tmp_path), "stats"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"tagscale query: error: {tmp_path / 'tags' / 'manifest.json'} lists ")
    assert not (tmp_path / "pwned.csv").exists()


def test_tag_files_that_are_not_tag_output_are_a_clear_error_naming_the_file(tmp_path):
    write_run(tmp_path, json.dumps({"files": ["run-1.parquet", "run-2.parquet"]}))
    listed = tmp_path / "tags" / "run-2.parquet"
    with pytest.raises(TagscaleError, match=f"cannot read tag file {listed}"):
        tagdata.load(str(tmp_path))  # listed, but not there
    listed.write_text("not parquet\n")
    with pytest.raises(TagscaleError, match=f"cannot read tag file {listed}: "):
        tagdata.load(str(tmp_path))
    pq.write_table(pyarrow.table({"track_id": ["x"], "scores": ["high"]}), listed)
    with pytest.raises(TagscaleError, match=f"{listed} is not tag output: no column uri, model, duration_s"):
        tagdata.load(str(tmp_path))
    rows = tag_rows(1, dim=4, n_tags=3)
    table = pyarrow.Table.from_pylist(rows, schema=TAGS_SCHEMA)
    wrong = table.set_column(table.schema.get_field_index("scores"), "scores", pyarrow.array(["high"]))
    pq.write_table(wrong, listed)
    with pytest.raises(TagscaleError, match=f"{listed} is not tag output: Unsupported cast from string to list"):
        tagdata.load(str(tmp_path))
    # Lists written by a writer that names their items "element" are the same schema.
    pq.write_table(table, listed, use_compliant_nested_type=True)
    assert sorted(tagdata.load(str(tmp_path)).track_ids) == ["track-000000", "track-000001"]
