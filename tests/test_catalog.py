"""Catalog parsing: three formats, bad rows to the dead letter, whole-catalog errors as one line."""

import json
import subprocess
import sys

import apache_beam as beam
import pyarrow
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import catalog
from pipelines.catalog import CatalogError, Track

ROWS = [
    {"track_id": "a", "uri": "/x/a.mp3", "tags": "rock;guitar"},
    {"track_id": "b", "uri": "gs://bucket/b.ogg", "tags": ""},
    {"track_id": "c", "uri": "file:///x/c, with comma.wav", "tags": "jazz"},
]
EXPECTED = [
    Track("a", "/x/a.mp3", ("rock", "guitar")),
    Track("b", "gs://bucket/b.ogg", ()),
    Track("c", "file:///x/c, with comma.wav", ("jazz",)),
]


def write_catalog(tmp_path, fmt, rows=ROWS):
    path = tmp_path / f"catalog.{fmt}"
    if fmt == "csv":
        import csv

        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["track_id", "uri", "tags"])
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "jsonl":
        path.write_text(
            "".join(json.dumps({**row, "tags": row["tags"].split(";") if row["tags"] else []}) + "\n" for row in rows)
        )
    else:
        pq.write_table(pyarrow.Table.from_pylist(rows), path)
    return str(path)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_reads_three_formats(tmp_path, fmt):
    assert catalog.read_catalog(write_catalog(tmp_path, fmt)) == EXPECTED


def test_tags_column_is_optional(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("track_id,uri\nx,/a.wav\n")
    assert catalog.read_catalog(str(path)) == [Track("x", "/a.wav", ())]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("c.csv", "id,path\n1,/a.wav\n", "header must be track_id,uri"),
        ("c.csv", "", "empty"),
        ("c.jsonl", "{not json\n", "invalid JSON"),
        ("c.jsonl", '{"uri": "/a.wav"}\n', "lacks track_id"),
        ("c.txt", "track_id,uri\n", "unknown catalog format"),
        ("c.parquet", "not parquet at all", "not a Parquet file"),
    ],
)
def test_unusable_catalogs_raise_catalog_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(CatalogError, match=message):
        catalog.check_catalog(str(path))


def test_missing_catalog(tmp_path):
    with pytest.raises(CatalogError, match="not found"):
        catalog.check_catalog(str(tmp_path / "nope.csv"))


def test_read_catalog_transform_routes_bad_and_duplicate_rows(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text(
        "track_id,uri,tags\n"
        "a,/a.wav,x\n"
        ",/nameless.wav,x\n"  # row 2: no track_id
        "b,/b.wav\n"  # row 3: two fields
        "a,/a-again.wav,y\n"  # row 4: duplicate of row 1
        "\n"
        "c,/c.wav,\n"
    )
    with TestPipeline() as pipeline:
        out = pipeline | catalog.ReadCatalog(str(path))
        assert_that(out["tracks"], equal_to([Track("a", "/a.wav", ("x",)), Track("c", "/c.wav", ())]), label="tracks")
        errors = out["dead_letter"] | beam.Map(lambda r: (r["track_id"], r["stage"], r["error"]))
        assert_that(
            errors,
            equal_to(
                [
                    ("", "catalog", "row 2: missing track_id"),
                    ("", "catalog", "row 3: expected 3 fields (track_id,uri,tags), got 2"),
                    ("a", "catalog", "duplicate track_id: row 4 repeats row 1 (the first row is kept)"),
                ]
            ),
            label="dead letters",
        )


def test_cli_reports_a_broken_catalog_in_one_line(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,path\n1,/a.wav\n")
    result = subprocess.run(
        [sys.executable, "-m", "infra.cli", "featurize", "--catalog", str(path), "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("tagscale")]
    assert lines == [f"tagscale featurize: error: {path}: CSV header must be track_id,uri[,tags][,split]; got id,path"]
    assert "Traceback" not in result.stderr
