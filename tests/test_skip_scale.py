"""``--incremental``'s skip at scale: the existing run is read into a per-worker lookup, never
turned into Beam elements (which the local runner would hold in memory, row by row)."""

from __future__ import annotations

import builtins

import apache_beam as beam
import numpy as np
import pyarrow
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics import monitoring_infos
from apache_beam.testing.util import assert_that, equal_to

from pipelines import skip
from pipelines.catalog import ReadCatalog
from runfolder.schema import TAGS_SCHEMA

ROWS = 30_000


def existing_run(path, rows: int, version: str = "v1", *, start: int = 0) -> str:
    """A tag file of ``rows`` tracks ``old-{i:08d}`` of model m/``version`` (empty scores)."""
    ids = [f"old-{i:08d}" for i in range(start, start + rows)]
    empty = pyarrow.array([[]] * rows)
    table = pyarrow.Table.from_arrays(
        [
            pyarrow.array(ids),
            pyarrow.array([f"/a/{i}.wav" for i in ids]),
            pyarrow.StructArray.from_arrays(
                [pyarrow.array(["m"] * rows), pyarrow.array([version] * rows)], names=["name", "version"]
            ),
            pyarrow.array(np.full(rows, 3.0)),
            pyarrow.array(np.ones(rows, dtype=np.int32)),
            empty.cast(TAGS_SCHEMA.field("scores").type),
            empty.cast(TAGS_SCHEMA.field("embedding").type),
        ],
        schema=TAGS_SCHEMA,
    )
    pq.write_table(table, path)
    return str(path)


def test_skip_makes_no_element_per_existing_row_or_skipped_catalog_row(tmp_path):
    """30,000 existing rows; a catalog of 10,004 rows, 10,000 of them already tagged: no
    PCollection holds more elements than the 4 tracks left to tag (a join would carry one per
    existing row, a split after reading one per catalog row), the skipped rows are counted,
    and the split is right."""
    files = [existing_run(tmp_path / "a.parquet", ROWS), existing_run(tmp_path / "b.parquet", 10, "v0", start=ROWS)]
    tagged = [f"old-{i:08d}" for i in range(0, ROWS, 3)][:10_000]
    todo = [f" old-{ROWS:08d}", "new", "old-0000000", 7]  # a v0 row, an unknown id, a prefix, a number
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("track_id,uri\n" + "".join(f"{i},/{i}.wav\n" for i in tagged[:5000] + todo + tagged[5000:]))
    pipeline = beam.Pipeline()
    read = pipeline | ReadCatalog(str(catalog), skip=skip.AlreadyTagged(files, "v1"))
    todo_ids = read["tracks"] | "TodoIds" >> beam.Map(lambda t: t.track_id)
    assert_that(todo_ids, equal_to([f"old-{ROWS:08d}", "new", "old-0000000", "7"]), label="todo")
    assert_that(read["skipped"] | beam.CombineGlobally(sum), equal_to([10_000]), label="skipped")
    assert_that(read["dead_letter"], equal_to([]), label="no dead letters")
    result = pipeline.run()
    result.wait_until_finish()
    counts = [
        monitoring_infos.extract_counter_value(info)
        for info in result.monitoring_infos()
        if info.urn == monitoring_infos.ELEMENT_COUNT_URN
    ]
    assert counts and max(counts) <= len(todo) + 1  # assert_that joins one element of its own to what it checks


def test_lookup_is_exact_when_hashes_collide(tmp_path, monkeypatch):
    """With a hash of 4 values every id collides with thousands: the ids decide, so nothing
    is skipped that was not tagged, and nothing tagged is missed."""
    monkeypatch.setattr(skip, "_hashes", lambda ids: np.fromiter((hash(i) % 4 for i in ids), np.int64, len(ids)))
    monkeypatch.setattr(skip, "hash", lambda i: builtins.hash(i) % 4, raising=False)
    lookup = skip.TaggedIds([existing_run(tmp_path / "a.parquet", 5000)], "v1")
    asked = [f"old-{i:08d}" for i in range(4990, 5010)] + ["", "old-0000000"]
    assert lookup.has(asked).tolist() == [i < 5000 for i in range(4990, 5010)] + [False, False]
    assert [name in lookup for name in asked] == lookup.has(asked).tolist()


def test_lookup_takes_about_12_bytes_plus_the_id_per_row(tmp_path):
    """The lookup of 30,000 ids of 12 characters: 8-byte hashes, 4-byte offsets, the ids (and
    a validity bit per id): 723,750 bytes measured."""
    lookup = skip.TaggedIds([existing_run(tmp_path / "a.parquet", ROWS)], "v1")
    assert len(lookup) == ROWS
    size = lookup.hashes.nbytes + lookup.ids.nbytes
    assert size <= ROWS * (8 + 4 + 12) + ROWS // 8 + 64
    assert skip.TaggedIds([existing_run(tmp_path / "b.parquet", 10)], "v2").has(["old-00000001"]).tolist() == [False]


def test_run_model_reads_the_model_as_tag_run_does_and_refuses_two(tmp_path):
    """The one-model check of an incremental run (the model column alone) agrees with TagRun."""
    from runfolder import manifest, reader
    from runtime.errors import TagscaleError

    tags = tmp_path / "run" / "tags"
    tags.mkdir(parents=True)
    existing_run(tags / "a.parquet", 100)
    manifest.write_tags_manifest(str(tags), ["a.parquet"], run_id="1")
    assert reader.run_model(str(tags)) == reader.TagRun(str(tags)).model == {"name": "m", "version": "v1"}
    existing_run(tags / "b.parquet", 5, "v0", start=100)
    manifest.write_tags_manifest(str(tags), ["a.parquet", "b.parquet"], run_id="2")
    with pytest.raises(TagscaleError, match="holds rows of 2 models .m version v0, m version v1.: one model"):
        reader.run_model(str(tags))
