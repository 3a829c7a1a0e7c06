"""Dead-letter records: every track a pipeline could not process, with the stage and the reason."""

from __future__ import annotations

import apache_beam as beam
import pyarrow

TAG = "dead_letter"
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


class WriteDeadLetter(beam.PTransform):
    """Write dead-letter rows to ``DIR/dead_letter/part-*.parquet`` (an empty file when none)."""

    def __init__(self, output_dir: str):
        super().__init__()
        self._prefix = output_dir.rstrip("/") + "/dead_letter/part"

    def expand(self, records):
        return records | "WriteParquet" >> beam.io.WriteToParquet(
            self._prefix, SCHEMA, file_name_suffix=".parquet", num_shards=1
        )
