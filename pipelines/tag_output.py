"""tag's output files: the Parquet sink and ``DIR/tags/manifest.json``, the list readers go by.

A tag run writes its Parquet into its staging directory; the manifest it publishes last lists
exactly the files of the output (this run's, plus the earlier ones an ``--incremental`` run
keeps), so a reader never sees a partial or stale file, locally or on gs://.
"""

from __future__ import annotations

import json
import os
import time

import apache_beam as beam
from apache_beam.io import parquetio

from pipelines import fileio

MANIFEST = "manifest.json"
PAUSE_IN_SINK_ENV = "TAGSCALE_TEST_PAUSE_IN_SINK"  # test hook: a marker path; the sink pauses mid-write


def manifest_files(tags_dir: str) -> list[str] | None:
    """The Parquet file names (relative to ``tags_dir``) its manifest lists; None without one."""
    path = fileio.join(tags_dir, MANIFEST)
    if not fileio.exists(path):
        return None
    return list(json.loads(fileio.read_text(path))["files"])


def write_manifest(tags_dir: str, names: list[str], *, run_id: str) -> dict:
    """Write ``tags_dir/manifest.json`` listing exactly ``names``: the files readers will read."""
    manifest = {"files": sorted(names), "run_id": run_id, "written_by": "tagscale"}
    fileio.write_text(fileio.join(tags_dir, MANIFEST), json.dumps(manifest, indent=1))
    return manifest


def tag_files(tags_dir: str) -> list[str]:
    """Every Parquet file of a tag output, as its manifest lists them.

    ``tags_dir`` is a ``tagscale tag --output`` directory or its ``tags/`` directory. Output
    written before manifests existed (no manifest.json) is read by its ``*.parquet`` files.
    """
    base = tags_dir.rstrip("/")
    candidates = [fileio.join(base, "tags"), base]
    for directory in candidates:
        names = manifest_files(directory)
        if names is not None:
            return [fileio.join(directory, name) for name in names]
    for directory in candidates:
        files = fileio.glob(fileio.join(directory, "*.parquet"))
        if files:
            return files
    return []


class _PausingParquetSink(parquetio._ParquetSink):
    """The Parquet sink with the test hook: after its first row group is written it records
    the temporary file in the marker and sleeps, so a test can kill a run inside the sink."""

    def open(self, temp_path):
        self._hook_path = temp_path
        return super().open(temp_path)

    def write_record(self, writer, table):
        super().write_record(writer, table)
        marker = os.environ.get(PAUSE_IN_SINK_ENV)
        if marker:
            with open(marker, "w", encoding="utf-8") as handle:
                handle.write(f"in sink, writing {self._hook_path}\n")
            time.sleep(3600)


class WriteTags(beam.PTransform):
    """Rows -> one Parquet file ``{directory}/run-{run_id}-00000-of-00001.parquet``."""

    def __init__(self, directory: str, run_id: str, schema):
        super().__init__()
        self._prefix = fileio.join(directory, f"run-{run_id}")
        self._schema = schema

    def expand(self, rows):
        write = beam.io.WriteToParquet(self._prefix, self._schema, file_name_suffix=".parquet", num_shards=1)
        if os.environ.get(PAUSE_IN_SINK_ENV):
            write._sink.__class__ = _PausingParquetSink
        return rows | write
