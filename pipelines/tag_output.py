"""tag's output, the Beam side: :class:`WriteTags` (a run's rows into sharded Parquet in the run
folder's ``tags/``), the files a run wrote, the provenance every file carries, and the flags.

What a run folder holds, its manifest, schema and readers are :mod:`runfolder`'s; this module
only puts rows there from a pipeline.
"""

from __future__ import annotations

import apache_beam as beam

from pipelines import dead_letter, parquet_shards, shards
from runfolder import layout, provenance, schema


def _track_id(row: dict) -> str:
    return row["track_id"]


def run_files(tags_dir: str, run_id: str) -> list[str]:
    """The names of the files :class:`WriteTags` wrote for ``run_id`` (all of them, checked)."""
    return parquet_shards.written_files(tags_dir, layout.run_prefix(run_id))


def run_segment_files(tags_dir: str, run_id: str) -> list[str]:
    """The names of the segment files written for ``run_id`` (all of them, checked)."""
    return parquet_shards.written_files(tags_dir, layout.segments_prefix(run_id))


def file_metadata(catalog, base: dict):
    """A one-element PCollection: the Parquet key-value metadata of ``base`` (a run's
    provenance) with the row count of ``catalog`` (a ``ReadCatalog`` result: its tracks, its
    bad rows and the rows it skipped), counted in the pipeline, where the rows are read anyway;
    the driver never reads the catalog."""
    # Each input counted where it is made, then the counts added: a Flatten of the rows
    # themselves would hold every one of them in memory on the local runner.
    counts = (
        catalog["tracks"] | "CountCatalogTracks" >> beam.combiners.Count.Globally(),
        catalog[dead_letter.TAG] | "CountCatalogBadRows" >> beam.combiners.Count.Globally(),
        catalog["skipped"] | "CountCatalogSkipped" >> beam.CombineGlobally(sum),  # counts, not rows
    )
    return (
        counts
        | "AllCatalogRows" >> beam.Flatten()
        | "CountCatalogRows" >> beam.CombineGlobally(sum)
        | "ProvenanceMetadata" >> beam.Map(provenance.parquet_metadata, base)
    )


def add_arguments(parser) -> None:
    """``--num-shards``, ``--target-shard-bytes`` and ``--segments`` of ``tagscale tag``."""
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
        table_schema=schema.TAGS_SCHEMA,
        *,
        num_shards: int | None = None,
        target_bytes: int = shards.DEFAULT_TARGET_BYTES,
        metadata=None,
        prefix: str | None = None,
        size=schema.row_bytes,
    ):
        super().__init__()
        self._write = parquet_shards.WriteParquetShards(
            directory,
            prefix or layout.run_prefix(run_id),
            table_schema,
            key=_track_id,
            row_bytes=size,
            num_shards=num_shards,
            target_bytes=target_bytes,
            metadata=metadata,
        )

    def expand(self, rows):
        return rows | "WriteParquet" >> self._write
