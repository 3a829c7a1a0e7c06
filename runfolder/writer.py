"""The one writer of a run's Parquet files: the tag job's sink and ``probe apply`` both write
tag rows (:func:`runfolder.schema.tag_row`) through :func:`write_file`, so every tag file of
every run has one format: the schema given, no compression, non-compliant nested names
(``list.item``, as Beam's WriteToParquet wrote them), dictionary encoding for strings only, a
row group per :data:`ROW_GROUP_BYTES` of estimated data.
"""

from __future__ import annotations

import io

import pyarrow
import pyarrow.parquet as pq

from runfolder import schema as tag_schema

CODEC = "none"  # the files as Beam's WriteToParquet wrote them before, so readers see no change
ROW_GROUP_BYTES = 4 * 2**20  # estimated encoded bytes per row group: bounds a writer's memory


def string_columns(schema: pyarrow.Schema) -> list[str]:
    """The Parquet paths of ``schema``'s string columns (``scores.list.item.tag``...).

    Only these are dictionary-encoded: tag names and reasons repeat, while a dictionary of
    float values that never repeat costs a full dictionary page per column and row group
    (measured: tag files 47% larger with it)."""
    empty = io.BytesIO()
    pq.write_table(schema.empty_table(), empty, use_compliant_nested_type=False)
    columns = pq.ParquetFile(io.BytesIO(empty.getvalue())).schema
    return [columns.column(i).path for i in range(len(columns)) if columns.column(i).physical_type == "BYTE_ARRAY"]


def write_file(
    path: str, rows, *, schema: pyarrow.Schema = tag_schema.TAGS_SCHEMA, row_bytes=tag_schema.row_bytes
) -> int:
    """Stream ``rows`` into one Parquet file at ``path`` (local or gs://), a row group per
    :data:`ROW_GROUP_BYTES` of estimated data; return the number of rows. No rows: a file
    with the schema and no row group. ``schema``'s metadata is the file's key-value metadata."""
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
