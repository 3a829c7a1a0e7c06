"""The one sharded sink: any format's shards, every shard written even when empty, one writer per shard.

A Beam stage on a handful of elements (TestPipeline, about a second): not marked slow.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import dead_letter, parquet_shards, sharded
from runfolder import layout


class TextShards(sharded.ShardWriter):
    """A toy format: shard ``i`` of ``n`` is ``{i}-of-{n}.txt``, the side input's header, then its
    words sorted."""

    def __init__(self, directory):
        self._directory = directory

    def shard_key(self, word, num_shards):
        return layout.shard_of(word, num_shards)

    def every_shard(self, num_shards):
        return range(num_shards)

    def write(self, shard, words, num_shards, header):
        path = f"{self._directory}/{shard}-of-{num_shards}.txt"
        with open(path, "w") as out:
            out.write("\n".join([header, *sorted(words)]))
        return [path]


def test_any_format_gets_every_shard_its_own_elements_and_the_side_inputs(tmp_path):
    words = ["ant", "bee", "cat", "dog", "eel"]
    with TestPipeline() as pipeline:
        counts = pipeline | "Counts" >> beam.Create([8])
        header = pipeline | "Header" >> beam.Create(["# words"])
        paths = (
            pipeline
            | beam.Create(words)
            | sharded.WriteSharded(TextShards(str(tmp_path)), counts, [beam.pvalue.AsSingleton(header)])
        )
        assert_that(paths, equal_to([f"{tmp_path}/{i}-of-8.txt" for i in range(8)]))
    for i in range(8):
        lines = (tmp_path / f"{i}-of-8.txt").read_text().split("\n")
        assert lines == ["# words", *sorted(w for w in words if layout.shard_of(w, 8) == i)]
    assert {len((tmp_path / f"{i}-of-8.txt").read_text().split("\n")) for i in range(8)} >= {1, 2}  # empty ones too


def test_parquet_sink_files_are_the_writers_bytes_for_each_shards_rows(tmp_path):
    """WriteParquetShards through Beam == the Parquet writer called on each shard's rows alone,
    byte for byte, key-value metadata (a side input) included."""
    num_shards = 16
    by_shard = {}  # one row per shard (the order inside a shard cannot differ), some shards empty
    for i in range(40):
        by_shard.setdefault(layout.shard_of(f"t{i}", num_shards), [f"t{i}"])
    ids = sorted(ids[0] for ids in by_shard.values())[:6]
    rows = [dead_letter.record(track_id=i, uri=f"/a/{i}.mp3", stage="decode", error="bad") for i in ids]
    by_shard = {layout.shard_of(row["track_id"], num_shards): [row] for row in rows}
    with TestPipeline() as pipeline:
        metadata = pipeline | "Metadata" >> beam.Create([{"origin": "test"}])
        _ = (
            pipeline
            | beam.Create(rows)
            | parquet_shards.WriteParquetShards(
                str(tmp_path / "beam"),
                "part",
                dead_letter.SCHEMA,
                key=lambda row: row["track_id"],
                row_bytes=dead_letter.record_bytes,
                num_shards=num_shards,
                metadata=metadata,
            )
        )
    (tmp_path / "direct").mkdir()
    writer = parquet_shards.ParquetShards(
        str(tmp_path / "direct"), "part", dead_letter.SCHEMA, lambda row: row["track_id"], dead_letter.record_bytes
    )
    for shard in writer.every_shard(num_shards):
        (path,) = writer.write(shard, iter(by_shard.get(shard, [])), num_shards, {"origin": "test"})
        name = path.rsplit("/", 1)[-1]
        assert (tmp_path / "beam" / name).read_bytes() == (tmp_path / "direct" / name).read_bytes(), name
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "beam")
    assert sorted(table.to_pylist(), key=lambda r: r["track_id"]) == rows
    assert pq.read_schema(tmp_path / "beam" / parquet_shards.shard_file("part", 0, 16)).metadata[b"origin"] == b"test"
