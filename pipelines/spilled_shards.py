"""Parquet shards written from a spill: rows go to files as they come; only file names are grouped.

:class:`pipelines.parquet_shards.WriteParquetShards` groups the rows themselves by shard. On
Beam's local runner every PCollection that crosses a stage boundary is held in memory (twice
there: the rows wait for the shard count, then for the grouping), so a run with a million dead
letters held about 1.6 KB per row. Here each bundle streams its rows to one JSON-lines file
under ``{directory}/_spill`` and hands on only that file's name and the estimated bytes of its
rows; from those come the shard count, and each shard's writer streams every spill file,
keeping the rows of its shard. Memory is a row group per writer, whatever the number of rows.

The files are the same as :class:`~pipelines.parquet_shards.WriteParquetShards` writes (same
names, shard of each row, schema and row groups); rows come in the order they were spilled.
Each shard reads every spill file, so this suits outputs of few shards (dead letters). The
spill is removed by :func:`remove_spill` once the pipeline has finished.
"""

from __future__ import annotations

import json
import time
import uuid

import apache_beam as beam

from pipelines import parquet_shards, shards
from pipelines.storage import fileio

SPILL = "_spill"  # a leading underscore: pyarrow's reading of the folder as a dataset skips it


def spill_dir(directory: str) -> str:
    return fileio.join(directory, SPILL)


def remove_spill(directory: str) -> None:
    """Delete ``directory``'s spill (files of a bundle that failed and was retried included)."""
    if fileio.exists(spill_dir(directory)) or "://" in directory:
        fileio.delete_tree(spill_dir(directory))


class _SpillFn(beam.DoFn):
    """Rows -> one spill file per bundle; ``(file name, estimated bytes)`` out when it closes.

    A file's name starts with the time its first row came, so the spill files sort in the order
    they were started. A bundle that fails hands on nothing, so a retry's rows are read once.
    """

    def __init__(self, directory: str, row_bytes):
        self._directory, self._row_bytes = directory, row_bytes

    def start_bundle(self):
        self._handle, self._name, self._bytes = None, None, 0

    def process(self, row):
        from apache_beam.io.filesystems import CompressionTypes, FileSystems

        if self._handle is None:
            self._name = f"{time.time_ns():020d}-{uuid.uuid4().hex}.jsonl"
            self._handle = FileSystems.create(
                fileio.join(spill_dir(self._directory), self._name), compression_type=CompressionTypes.UNCOMPRESSED
            )
        self._handle.write(json.dumps(row).encode("utf-8") + b"\n")
        self._bytes += self._row_bytes(row)

    def finish_bundle(self):
        if self._handle is not None:
            self._handle.close()
            yield beam.transforms.window.GlobalWindows.windowed_value((self._name, self._bytes))
        self._handle = None


def _spilled_rows(directory: str, names):
    from apache_beam.io.filesystems import FileSystems

    for name in sorted(names):
        with FileSystems.open(fileio.join(spill_dir(directory), name), compression_type="uncompressed") as handle:
            for line in handle:
                yield json.loads(line)


class _WriteShardFn(beam.DoFn):
    """``(shard, num_shards)`` -> that shard's file, from the rows of every spill file, written by
    the same shard writer as :class:`~pipelines.parquet_shards.WriteParquetShards`."""

    def __init__(self, directory: str, prefix: str, schema, key, row_bytes):
        self._directory = directory
        self._shards = parquet_shards.ParquetShards(directory, prefix, schema, key, row_bytes)

    def process(self, shard_of, names):
        shard, num_shards = shard_of
        rows = _spilled_rows(self._directory, names)
        yield from self._shards.write(
            shard, (row for row in rows if self._shards.shard_key(row, num_shards) == shard), num_shards
        )


class WriteSpilledParquetShards(beam.PTransform):
    """JSON-able rows (a PCollection, or a tuple of them) -> ``{directory}/{prefix}-SSSSS-of-NNNNN.parquet``,
    about ``target_bytes`` each (at least one file), by way of a spill; the paths written out.

    ``key``: row -> the string its shard is hashed from; ``row_bytes``: row -> an estimate of its
    encoded size, as for :class:`pipelines.parquet_shards.WriteParquetShards`.
    """

    def __init__(self, directory: str, prefix: str, schema, *, key, row_bytes, target_bytes: int):
        super().__init__()
        if target_bytes < 1:
            raise ValueError(f"need target_bytes >= 1, got {target_bytes}")
        self._directory, self._prefix, self._schema = directory, prefix, schema
        self._key, self._row_bytes, self._target_bytes = key, row_bytes, target_bytes

    def expand(self, rows):
        spill = _SpillFn(self._directory, self._row_bytes)
        if isinstance(rows, beam.pvalue.PCollection):
            spilled = rows | "Spill" >> beam.ParDo(spill)
        else:  # several PCollections: each spilled where it is made, only the file names flattened
            spilled = [part | f"Spill{i}" >> beam.ParDo(spill) for i, part in enumerate(rows)] | (
                "SpillFiles" >> beam.Flatten()
            )
        names = spilled | "SpillNames" >> beam.Map(lambda spill: spill[0])
        every_shard = (
            spilled
            | "SpillBytes" >> beam.Map(lambda spill: spill[1])
            | "TotalBytes" >> beam.CombineGlobally(sum)
            | "NumShards" >> beam.Map(shards.files_for, target_bytes=self._target_bytes)
            | "EveryShard" >> beam.FlatMap(lambda count: [(shard, count) for shard in range(count)])
            | "SpreadShards" >> beam.Reshuffle()  # one writer per shard, not all on one worker
        )
        writer = _WriteShardFn(self._directory, self._prefix, self._schema, self._key, self._row_bytes)
        return every_shard | "WriteShard" >> beam.ParDo(writer, beam.pvalue.AsList(names))
