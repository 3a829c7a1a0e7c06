"""tag's output files: Parquet shards and ``DIR/tags/manifest.json``, the list readers go by.

A tag run writes its Parquet into its staging directory as many files (:mod:`pipelines.parquet_shards`:
sized by ``--target-shard-bytes`` or counted by ``--num-shards``); the manifest it publishes
last lists exactly the files of the output (this run's, plus the earlier ones an
``--incremental`` run keeps), so a reader never sees a partial or stale file, locally or on gs://.
A run with ``--segments`` writes its segments table (:mod:`pipelines.segments`) the same way,
into the same folder, and the manifest lists those files under ``segments``.
"""

from __future__ import annotations

import apache_beam as beam

from pipelines import parquet_shards, segments, shards
from pipelines.storage import fileio
from runtime.errors import TagscaleError

MANIFEST = "manifest.json"


def manifest_files(tags_dir: str) -> list[str] | None:
    """The Parquet file names (relative to ``tags_dir``) its manifest lists; None without one.

    Raises
    ------
    runtime.errors.TagscaleError
        Naming the manifest, when it is malformed or lists anything but plain file names of
        ``tags_dir``.
    """
    return parquet_shards.read_manifest(tags_dir, MANIFEST)


def write_manifest(
    tags_dir: str,
    names: list[str],
    *,
    run_id: str,
    provenance: dict | None = None,
    segment_names: list[str] | None = None,
) -> dict:
    """Write ``tags_dir/manifest.json`` listing exactly ``names``: the files readers will read,
    with the run's ``provenance`` (:mod:`pipelines.provenance`) when given, and its segment
    files under ``segments`` (:mod:`pipelines.segments`) when the run has a segments table."""
    extra = {"provenance": provenance} if provenance is not None else {}
    if segment_names is not None:
        extra[segments.MANIFEST_KEY] = sorted(segment_names)
    return parquet_shards.write_manifest(tags_dir, MANIFEST, names, run_id=run_id, extra=extra or None)


def _tags_dirs(tags_dir: str) -> list[str]:
    base = tags_dir.rstrip("/")
    return [fileio.join(base, "tags"), base]


def segment_files(tags_dir: str) -> list[str] | None:
    """Every segment Parquet file of a tag output (its manifest's ``segments``); None when the
    run has no segments table (tagged without ``--segments``, or written before manifests)."""
    for directory in _tags_dirs(tags_dir):
        if manifest_files(directory) is not None:
            names = parquet_shards.read_manifest(directory, MANIFEST, segments.MANIFEST_KEY)
            return None if names is None else [fileio.join(directory, name) for name in names]
    return None


def keep_segments(asked: bool, incremental: bool, kept: list[str], kept_segments: list[str] | None) -> bool:
    """Whether an incremental run writes segments, so that the two tables stay consistent.

    Over an output with a segments table, the run writes segments whether or not ``--segments``
    was given: dropping the table would lose the kept tracks' rows, and keeping it without new
    rows would leave the new tracks out. Over tracks tagged without segments, ``--segments``
    cannot add theirs (their track rows would be written twice): refused.

    Raises
    ------
    TagscaleError
        ``--segments --incremental`` over an output whose tracks were tagged without segments.
    """
    if not incremental or not kept:
        return asked
    if kept_segments is not None:
        return True
    if asked:
        raise TagscaleError(
            "--segments --incremental: the tracks already in this output were tagged without --segments, "
            "so they have no segment rows; run once without --incremental to tag every track with segments"
        )
    return False


def tag_files(tags_dir: str) -> list[str]:
    """Every Parquet file of a tag output, as its manifest lists them.

    ``tags_dir`` is a ``tagscale tag --output`` directory or its ``tags/`` directory. Output
    written before manifests existed (no manifest.json) is read by its ``*.parquet`` files.
    """
    candidates = _tags_dirs(tags_dir)
    for directory in candidates:
        names = manifest_files(directory)
        if names is not None:
            return [fileio.join(directory, name) for name in names]
    for directory in candidates:
        files = fileio.glob(fileio.join(directory, "*.parquet"))
        if files:
            return files
    return []


def row_bytes(row: dict) -> int:
    """About the bytes a tag row takes in an uncompressed Parquet file: 4 per embedding value,
    about 5 per score (the value and its dictionary-encoded tag), the ids, a fixed part."""
    return 4 * len(row["embedding"]) + 5 * len(row["scores"]) + len(row["track_id"]) + len(row["uri"]) + 24


def _track_id(row: dict) -> str:
    return row["track_id"]


def run_files(tags_dir: str, run_id: str) -> list[str]:
    """The names of the files :class:`WriteTags` wrote for ``run_id`` (all of them, checked)."""
    return parquet_shards.written_files(tags_dir, f"run-{run_id}")


def run_segment_files(tags_dir: str, run_id: str) -> list[str]:
    """The names of the segment files written for ``run_id`` (all of them, checked)."""
    return parquet_shards.written_files(tags_dir, segments.file_prefix(run_id))


def add_arguments(parser) -> None:
    """``--num-shards`` and ``--target-shard-bytes`` of ``tagscale tag``."""
    parser.add_argument(
        "--target-shard-bytes",
        type=int,
        default=shards.DEFAULT_TARGET_BYTES,
        help="write the tags as Parquet files of about this many bytes each (%(default)s)",
    )
    parser.add_argument(
        "--num-shards",
        type=int,
        default=None,
        help="a fixed number of tag Parquet files instead (dead letters: by bytes)",
    )
    parser.add_argument(
        "--segments",
        action="store_true",
        help="also write each patch's scores (track_id, start_s, end_s, scores) to a segments table "
        "(DIR/tags/segments-*.parquet); an --incremental run over an output with segments always writes them",
    )


class WriteTags(beam.PTransform):
    """Rows -> ``{directory}/run-{run_id}-SSSSS-of-NNNNN.parquet`` (paths out), a track's row in
    the shard its track_id hashes to; ``num_shards`` files, or as many as ``target_bytes`` asks;
    each file carries ``metadata`` (a one-dict PCollection) as its Parquet key-value metadata.
    Segment rows go through it too, with their own ``prefix`` and ``size`` estimate."""

    def __init__(
        self,
        directory: str,
        run_id: str,
        schema,
        *,
        num_shards: int | None = None,
        target_bytes: int = shards.DEFAULT_TARGET_BYTES,
        metadata=None,
        prefix: str | None = None,
        size=row_bytes,
    ):
        super().__init__()
        self._write = parquet_shards.WriteParquetShards(
            directory,
            prefix or f"run-{run_id}",
            schema,
            key=_track_id,
            row_bytes=size,
            num_shards=num_shards,
            target_bytes=target_bytes,
            metadata=metadata,
        )

    def expand(self, rows):
        return rows | "WriteParquet" >> self._write
