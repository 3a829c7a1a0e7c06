"""Parquet outputs as many files: tag rows and dead letters, written in parallel, listed in a manifest.

A row goes to the shard given by a stable hash of its key (the track_id), so every shard is
written by its own worker; none funnels the catalog's rows. The number of shards is fixed
(``num_shards``) or follows the data volume: about ``target_bytes`` per file, from an estimate
of each row's encoded size summed across workers. Each shard is one file
``{directory}/{prefix}-SSSSS-of-NNNNN.parquet``, streamed in row groups (memory: one row group,
whatever the shard's size), and written even when empty, so a run always has every file it
names. The run's driver then lists the files in a manifest (a JSON ``{"files": [names]}``) that
readers go by instead of a glob.
"""

from __future__ import annotations

import apache_beam as beam

from pipelines import sharded, shards
from pipelines.storage import fileio
from runfolder import layout, writer


def shard_file(prefix: str, shard: int, num_shards: int) -> str:
    """The file name of shard ``shard`` of ``num_shards``."""
    return f"{prefix}-{shard:05d}-of-{num_shards:05d}.parquet"


def written_files(directory: str, prefix: str) -> list[str]:
    """The names of the shards a :class:`WriteParquetShards` wrote with ``prefix`` in ``directory``.

    Raises
    ------
    RuntimeError
        When a shard is missing or files of two shard counts are there: the write did not finish.
    """
    names = [path.rsplit("/", 1)[-1] for path in fileio.glob(fileio.join(directory, f"{prefix}-*-of-*.parquet"))]
    counts = {name.rsplit("-of-", 1)[1].removesuffix(".parquet") for name in names}
    expected = [shard_file(prefix, i, int(n)) for n in counts for i in range(int(n))]
    if len(counts) != 1 or sorted(names) != sorted(expected):
        raise RuntimeError(f"{directory}: incomplete shards {prefix}-*: found {sorted(names)[:6]}")
    return sorted(names)


class ParquetShards(sharded.ShardWriter):
    """Shard ``shard`` of ``counts`` (an int) -> ``{directory}/{prefix}-SSSSS-of-NNNNN.parquet``,
    with the optional side input ``metadata`` as its Parquet key-value metadata."""

    def __init__(self, directory: str, prefix: str, schema, key, row_bytes):
        self._directory, self._prefix, self._schema = directory, prefix, schema
        self._key, self._row_bytes = key, row_bytes

    def shard_key(self, row, num_shards: int) -> int:
        return layout.shard_of(self._key(row), num_shards)

    def every_shard(self, num_shards: int):
        return range(num_shards)

    def write(self, shard, rows, num_shards, metadata=None):
        path = fileio.join(self._directory, shard_file(self._prefix, shard, num_shards))
        schema = self._schema.with_metadata({**(self._schema.metadata or {}), **metadata}) if metadata else self._schema
        count = writer.write_file(path, rows, schema=schema, row_bytes=self._row_bytes)
        beam.metrics.Metrics.counter("parquet", "rows_written").inc(count)
        return [path]


class WriteParquetShards(sharded.WriteSharded):
    """Rows -> ``{directory}/{prefix}-SSSSS-of-NNNNN.parquet``, one worker per file; paths out.

    Parameters
    ----------
    directory, prefix : str
        Where the files go and how their names start.
    schema : pyarrow.Schema
    key : callable
        Row -> the string its shard is hashed from (rows of one key share a file).
    row_bytes : callable
        Row -> an estimate of its encoded size in the file, for the shard count and row groups.
    num_shards : int, optional
        A fixed number of files; by default ``ceil(estimated bytes / target_bytes)``, at least 1.
    target_bytes : int
    metadata : PCollection, optional
        One ``{key: value}`` dict of strings (known only once the pipeline runs) that every
        file carries as its Parquet key-value metadata.
    """

    def __init__(
        self,
        directory: str,
        prefix: str,
        schema,
        *,
        key,
        row_bytes,
        num_shards: int | None = None,
        target_bytes: int = shards.DEFAULT_TARGET_BYTES,
        metadata=None,
    ):
        if (num_shards is not None and num_shards < 1) or target_bytes < 1:
            raise ValueError(f"need num_shards >= 1 and target_bytes >= 1, got {num_shards}, {target_bytes}")
        side = () if metadata is None else (beam.pvalue.AsSingleton(metadata),)
        super().__init__(ParquetShards(directory, prefix, schema, key, row_bytes), side_inputs=side)
        self._row_bytes, self._num_shards, self._target_bytes = row_bytes, num_shards, target_bytes

    def shard_counts(self, rows):
        if self._num_shards:
            count = rows.pipeline | "NumShards" >> beam.Create([self._num_shards])
        else:
            # Partial sums on every worker, one small merge: the only global step is an integer.
            count = (
                rows
                | "RowBytes" >> beam.Map(self._row_bytes)
                | "TotalBytes" >> beam.CombineGlobally(sum)
                | "NumShards" >> beam.Map(shards.files_for, target_bytes=self._target_bytes)
            )
        return count
