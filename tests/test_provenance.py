"""Provenance of a tag run, read back from its manifest and shown as a few lines; no Beam run."""

import json

from runfolder import layout, provenance

RECORD = {
    "model": {
        "name": "musicnn-mtt",
        "version": "1",
        "license": "ISC",
        "source": "https://example.org/musicnn",
        "sha256": "ab" * 32,
        "commercial": True,
    },
    "catalog": {"path": "/data/catalog.csv", "rows": 12},
    "tagscale_version": "0.1.0",
}


def write_manifest(folder, document) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = document if isinstance(document, str) else json.dumps(document)
    (folder / layout.MANIFEST).write_text(text)


def test_read_finds_the_manifest_from_the_run_or_its_tags_folder(tmp_path):
    write_manifest(tmp_path / "run" / "tags", {"files": ["run-1.parquet"], "provenance": RECORD})
    assert provenance.read(str(tmp_path / "run")) == RECORD
    assert provenance.read(str(tmp_path / "run" / "tags") + "/") == RECORD


def test_runs_without_a_readable_record_have_none(tmp_path):
    write_manifest(tmp_path / "old" / "tags", {"files": ["run-1.parquet"]})  # before runs recorded it
    write_manifest(tmp_path / "broken" / "tags", '{"files": [')
    write_manifest(tmp_path / "list" / "tags", ["run-1.parquet"])
    write_manifest(tmp_path / "odd" / "tags", {"provenance": "musicnn"})
    for name in ("old", "broken", "list", "odd", "missing"):
        assert provenance.read(str(tmp_path / name)) is None, name


def test_describe_says_where_the_scores_came_from():
    assert provenance.describe(RECORD) == [
        "model: musicnn-mtt version 1",
        "licence: ISC (commercial use: yes)",
        f"source: https://example.org/musicnn (sha256 {'ab' * 32})",
        "catalog: /data/catalog.csv (12 rows)",
        "tagscale: 0.1.0",
    ]
    unknown = {**RECORD, "model": {**RECORD["model"], "commercial": None, "sha256": None}}
    lines = provenance.describe(unknown)
    assert lines[1] == "licence: ISC (commercial use: unknown)" and lines[2] == "source: https://example.org/musicnn"
