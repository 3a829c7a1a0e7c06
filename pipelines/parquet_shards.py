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

import json
import re

import apache_beam as beam

from pipelines import sharded, shards
from pipelines.storage import fileio
from runtime.errors import TagscaleError

CODEC = "none"  # the files as Beam's WriteToParquet wrote them before, so readers see no change
ROW_GROUP_BYTES = 4 * 2**20  # estimated encoded bytes per row group: bounds a writer's memory
# A manifest entry is a plain file name of the run's folder: no path, no quoting, no control
# characters, so it is safe to join to the folder and to hand to SQL.
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\.parquet")


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


def read_manifest(directory: str, name: str, key: str = "files") -> list[str] | None:
    """The file names ``directory/name`` lists (under ``key``); None when there is no such
    manifest, or when an optional ``key`` (any but ``files``) is not in it.

    Raises
    ------
    TagscaleError
        Naming the manifest, when it is not JSON of the form ``{"files": [names]}`` or an entry
        is not a plain Parquet file name of ``directory`` (:data:`SAFE_NAME`).
    """
    path = fileio.join(directory, name)
    if not fileio.exists(path):
        return None
    try:
        manifest = json.loads(fileio.read_text(path))
    except (ValueError, UnicodeDecodeError) as error:
        raise TagscaleError(f"{path} is not a tagscale manifest: not JSON ({error})") from error
    if key != "files" and isinstance(manifest, dict) and key not in manifest:
        return None
    files = manifest.get(key) if isinstance(manifest, dict) else None
    if not isinstance(files, list):
        raise TagscaleError(f'{path} is not a tagscale manifest: expected {{"{key}": [file names]}}')
    for entry in files:
        if not isinstance(entry, str) or not SAFE_NAME.fullmatch(entry):
            raise TagscaleError(
                f"{path} lists {ascii(entry)[:120]}, not a plain Parquet file name "
                f"of its folder ({SAFE_NAME.pattern}); refusing to read it"
            )
    return list(files)


def write_manifest(directory: str, name: str, names: list[str], *, run_id: str, extra: dict | None = None) -> dict:
    """Write ``directory/name`` listing exactly ``names``: the files readers will read (and the
    keys of ``extra``, which readers of the file list ignore; a list there is more file names)."""
    listed = [entry for value in (extra or {}).values() if isinstance(value, list) for entry in value]
    for entry in [*names, *listed]:
        if not SAFE_NAME.fullmatch(entry):
            raise ValueError(f"not a plain Parquet file name: {entry!r}")
    manifest = {**(extra or {}), "files": sorted(names), "run_id": run_id, "written_by": "tagscale"}
    fileio.write_text(fileio.join(directory, name), json.dumps(manifest, indent=1))
    return manifest


def string_columns(schema) -> list[str]:
    """The Parquet paths of ``schema``'s string columns (``scores.list.item.tag``...).

    Only these are dictionary-encoded: tag names and reasons repeat, while a dictionary of
    float values that never repeat costs a full dictionary page per column and row group
    (measured: tag files 47% larger with it)."""
    import io

    import pyarrow.parquet as pq

    empty = io.BytesIO()
    pq.write_table(schema.empty_table(), empty, use_compliant_nested_type=False)
    columns = pq.ParquetFile(io.BytesIO(empty.getvalue())).schema
    return [columns.column(i).path for i in range(len(columns)) if columns.column(i).physical_type == "BYTE_ARRAY"]


def write_file(path: str, schema, rows, *, row_bytes) -> int:
    """Stream ``rows`` into one Parquet file at ``path`` (local or gs://), a row group per
    :data:`ROW_GROUP_BYTES` of estimated data; return the number of rows. No rows: a file
    with the schema and no row group."""
    import pyarrow
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import CompressionTypes, FileSystems

    count = 0
    with FileSystems.create(
        path, mime_type="application/x-parquet", compression_type=CompressionTypes.UNCOMPRESSED
    ) as handle:
        writer = pq.ParquetWriter(
            handle, schema, compression=CODEC, use_compliant_nested_type=False, use_dictionary=string_columns(schema)
        )
        batch, size = [], 0
        for row in rows:
            batch.append(row)
            size += row_bytes(row)
            if size >= ROW_GROUP_BYTES:
                writer.write_table(pyarrow.Table.from_pylist(batch, schema=schema))
                count, batch, size = count + len(batch), [], 0
        if batch:
            writer.write_table(pyarrow.Table.from_pylist(batch, schema=schema))
            count += len(batch)
        writer.close()
    return count


class ParquetShards(sharded.ShardWriter):
    """Shard ``shard`` of ``counts`` (an int) -> ``{directory}/{prefix}-SSSSS-of-NNNNN.parquet``,
    with the optional side input ``metadata`` as its Parquet key-value metadata."""

    def __init__(self, directory: str, prefix: str, schema, key, row_bytes):
        self._directory, self._prefix, self._schema = directory, prefix, schema
        self._key, self._row_bytes = key, row_bytes

    def shard_key(self, row, num_shards: int) -> int:
        return shards.shard_of(self._key(row), num_shards)

    def every_shard(self, num_shards: int):
        return range(num_shards)

    def write(self, shard, rows, num_shards, metadata=None):
        path = fileio.join(self._directory, shard_file(self._prefix, shard, num_shards))
        schema = self._schema.with_metadata({**(self._schema.metadata or {}), **metadata}) if metadata else self._schema
        count = write_file(path, schema, rows, row_bytes=self._row_bytes)
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
