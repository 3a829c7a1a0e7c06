"""Catalog parsing: three formats, bad rows to the dead letter, whole-catalog errors as one line."""

import csv
import json
import re
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


def huge_field_catalog(tmp_path, good_uris=("/a.wav", "/c.wav")):
    """Rows 1 and 3 are good; row 2 has a 200,000-character field, over the csv module's limit."""
    path = tmp_path / "huge.csv"
    path.write_text(f"track_id,uri,tags\na,{good_uris[0]},x\nb,/b.wav,{'y' * 200_000}\nc,{good_uris[1]},z\n")
    return str(path)


HUGE_FIELD_REASON = "row 2: unreadable CSV row: field larger than field limit (131072)"


def test_a_field_over_the_csv_limit_is_one_bad_row(tmp_path):
    out = list(catalog.parse_rows(huge_field_catalog(tmp_path)))
    assert [item for item in out if not hasattr(item, "tag")] == [
        ("a", (1, Track("a", "/a.wav", ("x",)))),
        ("c", (3, Track("c", "/c.wav", ("z",)))),
    ]
    dead = [item.value for item in out if hasattr(item, "tag")]
    assert dead == [{"track_id": "", "uri": "", "stage": "catalog", "error": HUGE_FIELD_REASON}]
    expected = f"{tmp_path / 'huge.csv'}: {HUGE_FIELD_REASON}"
    with pytest.raises(CatalogError, match=f"^{re.escape(expected)}$"):
        catalog.read_catalog(huge_field_catalog(tmp_path))
    (tmp_path / "header.csv").write_text(f"track_id,uri,{'t' * 200_000}\n")
    with pytest.raises(CatalogError, match="unreadable CSV header: field larger than field limit"):
        catalog.check_catalog(str(tmp_path / "header.csv"))


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_tag_with_a_newline_or_control_character_is_a_bad_row(tmp_path, fmt):
    """A newline inside a (quoted CSV or JSON) tag would split the one-tag-per-line vocabulary."""
    rows = [("a", "/a.wav", ["rock", "new\nline"]), ("b", "/b.wav", ["x\x1b[31mred\x07"]), ("c", "/c.wav", ["jazz"])]
    path = tmp_path / f"catalog.{fmt}"
    if fmt == "csv":
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["track_id", "uri", "tags"])
            writer.writerows([(i, u, ";".join(t)) for i, u, t in rows])
    else:
        path.write_text("".join(json.dumps({"track_id": i, "uri": u, "tags": t}) + "\n" for i, u, t in rows))
    out = list(catalog.parse_rows(str(path)))
    assert [item for item in out if not hasattr(item, "tag")] == [("c", (3, Track("c", "/c.wav", ("jazz",))))]
    dead = [item.value for item in out if hasattr(item, "tag")]
    assert [(d["track_id"], d["error"]) for d in dead] == [
        ("a", "row 1: tag 'new\\nline' contains a control character (newline, tab, NUL, ...)"),
        ("b", "row 2: tag 'x\\x1b[31mred\\x07' contains a control character (newline, tab, NUL, ...)"),
    ]


@pytest.mark.slow
def test_featurize_dead_letters_a_huge_field_and_processes_the_other_rows(tmp_path):
    import soundfile
    from made import synth_tone

    from pipelines import featurize

    uris = []
    for name in ("a", "c"):
        soundfile.write(tmp_path / f"{name}.wav", synth_tone(4.0, 16000, seed=len(uris)), 16000)
        uris.append(str(tmp_path / f"{name}.wav"))
    output = tmp_path / "out"
    metadata = featurize.run(["--catalog", huge_field_catalog(tmp_path, uris), "--output", str(output)])
    assert (metadata["tracks_in"], metadata["tracks_ok"], metadata["tracks_failed"]) == (3, 2, 1)
    dead = pq.read_table(output / "dead_letter").to_pylist()
    assert [(row["stage"], row["error"]) for row in dead] == [("catalog", HUGE_FIELD_REASON)]
