"""Dead-letter records: every track a pipeline could not process, with the stage and the reason.

A run writes them as ``DIR/dead_letter/part-SSSSS-of-NNNNN.parquet``, as many files as their
volume asks (:mod:`pipelines.parquet_shards`), and lists them in ``DIR/dead_letter/_manifest.json``
(the leading underscore keeps pyarrow's reading of the folder as one dataset to the Parquet).
Readers find them with :func:`runfolder.manifest.dead_letter_files`.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow

from pipelines.storage import fileio
from runfolder import layout, manifest

TAG = "dead_letter"
PREFIX = "part"
SCHEMA = pyarrow.schema(
    [
        ("track_id", pyarrow.string()),
        ("uri", pyarrow.string()),
        ("stage", pyarrow.string()),
        ("error", pyarrow.string()),
    ]
)


def printable(text: str) -> str:
    """Valid UTF-8 for Parquet: undecodable bytes kept from a catalog show as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def record(*, track_id: str, uri: str, stage: str, error: str) -> dict:
    """One dead-letter row. ``stage`` is where it failed: catalog, decode..."""
    return {"track_id": printable(track_id), "uri": printable(uri), "stage": stage, "error": printable(error[:2000])}


def record_bytes(row: dict) -> int:
    """At most about the bytes a record takes in an uncompressed Parquet file (reasons that
    repeat take less once dictionary-encoded: files come out up to ~3x under the target)."""
    return sum(len(row[field]) + 4 for field in ("track_id", "uri", "stage", "error"))


def _track_id(row: dict) -> str:
    return row["track_id"]


def write_manifest(output_dir: str, *, run_id: str) -> dict:
    """List the files :class:`WriteDeadLetter` wrote under ``output_dir`` (checked complete) in
    ``dead_letter/_manifest.json``; the run's driver calls this when the pipeline has finished."""
    from pipelines import parquet_shards

    folder = fileio.join(output_dir, layout.DEAD_LETTER)
    names = parquet_shards.written_files(folder, PREFIX)
    return manifest.write_manifest(folder, layout.DEAD_LETTER_MANIFEST, names, run_id=run_id)


class WriteDeadLetter(beam.PTransform):
    """Write dead-letter rows to ``DIR/dead_letter/part-SSSSS-of-NNNNN.parquet``: files of about
    ``target_bytes``, each written by its own worker (one empty file when there are none)."""

    def __init__(self, output_dir: str, *, target_bytes: int | None = None):
        super().__init__()
        self._folder = fileio.join(output_dir.rstrip("/"), layout.DEAD_LETTER)
        self._target_bytes = target_bytes

    def expand(self, records):
        from pipelines import parquet_shards, shards

        return records | "WriteParquet" >> parquet_shards.WriteParquetShards(
            self._folder,
            PREFIX,
            SCHEMA,
            key=_track_id,
            row_bytes=record_bytes,
            target_bytes=self._target_bytes or shards.DEFAULT_TARGET_BYTES,
        )
