"""tag: a catalog + a serving model -> one Parquet row of tag scores per track.

    python -m pipelines.tag --catalog catalog.csv --model musicnn-mtt --output tags_out/ [Beam flags]

    ReadCatalog (--incremental: already tagged rows dropped as read) -> DecodeTracks -> CutPatches
      -> RunInference (batched across tracks, overlapped with decoding) -> MeanPerTrack -> WriteTags
    every failure -> WriteDeadLetter;  counts (Beam counters) -> summary.json

With ``--segments`` the run also writes each patch's scores to a segments table
(:mod:`runfolder.segments`), in the same folder and manifest.

Output ``DIR/tags/*.parquet`` (as many files as ``--target-shard-bytes`` or ``--num-shards``
ask, listed in ``DIR/tags/manifest.json``), one row per track (schema
:data:`runfolder.schema.TAGS_SCHEMA`; the run folder is :mod:`runfolder`'s):
track_id, uri, model {name, version}, duration_s, n_patches, scores (every tag of the
model's vocabulary with its score, highest first) and embedding (mean patch embedding).
A track's score for a tag is the mean of its patches' sigmoid outputs, as musicnn does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time

import apache_beam as beam

from model import export
from pipelines import beam_util, dead_letter, inference, shards, skip, stages, tag_output, tag_progress
from pipelines.catalog import ReadCatalog
from pipelines.catalog_checks import audio_uris, check_reachable
from pipelines.storage import fileio, outputs, publish
from pipelines.tag_rows import per_track, track_patches
from runfolder import layout, manifest, provenance, reader, segments
from runtime.errors import TagscaleError
from runtime.machine import bfloat16_unavailable

LOG = logging.getLogger("tagscale.tag")


@dataclasses.dataclass(frozen=True)
class TagConfig:
    catalog: str
    model: str  # a serving-model directory (resolved from a pretrained name by the command)
    output: str
    incremental: bool = False
    batch_size: int = 16
    max_patches_per_track: int | None = None
    precision: str = "float32"
    progress_every_s: float = 5.0
    decode: stages.DecodeOptions = stages.DecodeOptions()
    num_shards: int | None = None  # tag Parquet files; None: sized by target_shard_bytes
    target_shard_bytes: int = shards.DEFAULT_TARGET_BYTES
    require_commercial: bool = False  # refuse a model not known to allow commercial use
    segments: bool = False  # also write each patch's scores (runfolder.segments)


# ------------------------------------------------------------------------ PTransforms


class TagTracks(beam.PTransform):
    """(track, samples) -> one Parquet-ready row per track, inference batched across tracks.

    With ``config.segments``, :attr:`segment_rows` is, once applied, the PCollection of the
    tracks' per-patch rows (:mod:`runfolder.segments`); None otherwise.
    """

    def __init__(self, config: TagConfig, *, tags: list[str], info: dict, total: int):
        super().__init__()
        self._config = config
        self._tags = tags
        self._info = info
        self._total = total
        self.segment_rows = None

    def expand(self, decoded):
        name, version = self._info.get("name", "model"), self._info["version"]
        rows = (
            decoded
            | "CutPatches"
            >> beam.FlatMap(lambda item: track_patches(*item, max_patches=self._config.max_patches_per_track))
            | "RunInference"
            >> inference.RunInference(
                self._config.model, batch_size=self._config.batch_size, precision=self._config.precision
            )
            | "Progress" >> beam.ParDo(tag_progress.Progress(self._total, self._config.progress_every_s))
            | "KeyByTrack" >> beam.MapTuple(lambda key, outputs: (key.track_id, (key, outputs)))
            | "GroupPatches" >> beam.GroupByKey()
            | "MeanPerTrack"
            >> beam.FlatMap(
                per_track,
                tags=self._tags,
                model_name=name,
                model_version=version,
                with_segments=self._config.segments,
            ).with_outputs(layout.SEGMENTS_KEY, main="tracks")
        )
        if self._config.segments:
            self.segment_rows = rows[layout.SEGMENTS_KEY]
        return rows.tracks


def build_pipeline(
    pipeline: beam.Pipeline,
    config: TagConfig,
    *,
    tags: list[str],
    info: dict,
    existing: list[str],
    run_id: str,
    total: int | None = None,
) -> None:
    """Add the tag graph to ``pipeline``, writing under ``config.output`` (a run's staging
    directory); ``existing`` are tag Parquet files of earlier runs to skip tracks from
    (``--incremental``). Progress lines count tracks without a total unless ``total`` is given:
    counting the catalog's rows would read it all on the driver."""
    # --incremental: rows of tracks the run has are dropped as the catalog is read (pipelines.skip)
    already = skip.AlreadyTagged(existing, info["version"]) if existing else None
    catalog = pipeline | "ReadCatalog" >> ReadCatalog(config.catalog, skip=already)
    decoded = catalog["tracks"] | "DecodeTracks" >> stages.DecodeTracks(config.decode)
    tag_tracks = TagTracks(config, tags=tags, info=info, total=total)
    rows = decoded.decoded | "TagTracks" >> tag_tracks
    origin = provenance.run_provenance(config.catalog, config.model, info, None)
    metadata = tag_output.file_metadata(catalog, origin)
    _ = rows | "WriteTags" >> tag_output.WriteTags(
        fileio.join(config.output, layout.TAGS),
        run_id,
        num_shards=config.num_shards,
        target_bytes=config.target_shard_bytes,
        metadata=metadata,
    )
    if config.segments:
        _ = tag_tracks.segment_rows | "WriteSegments" >> tag_output.WriteTags(
            fileio.join(config.output, layout.TAGS),
            run_id,
            segments.schema_for(tags),
            num_shards=config.num_shards,
            target_bytes=config.target_shard_bytes,
            metadata=metadata,
            prefix=layout.segments_prefix(run_id),
            size=segments.row_bytes,
        )
    failures = (catalog[dead_letter.TAG], decoded[dead_letter.TAG])  # no Flatten: it would hold them all
    _ = failures | "WriteDeadLetter" >> dead_letter.WriteDeadLetter(
        config.output, target_bytes=config.target_shard_bytes
    )
    stats = (
        catalog["tracks"] | "CountTracks" >> beam.Map(lambda _: ("tracks_in", 1)),
        catalog[dead_letter.TAG] | "CountBadRows" >> beam.Map(lambda _: ("tracks_in", 1)),
        catalog["skipped"] | "CountSkipped" >> beam.FlatMap(lambda n: [("tracks_in", n), ("skipped", n)]),
        *(part | f"CountFailed{i}" >> beam.Map(lambda _: ("failed", 1)) for i, part in enumerate(failures)),
        rows | "CountTagged" >> beam.Map(lambda row: ("tagged", 1)),
        rows | "CountSeconds" >> beam.Map(lambda row: ("audio_ms", round(row["duration_s"] * 1000))),
    ) | "AllStats" >> beam.Flatten()
    _ = stats | "CountStats" >> stages.CountStats()


# ----------------------------------------------------------------------------- command


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="tagscale tag",
        description="Beam pipeline: tag every track of a catalog with a model; write DIR/tags/*.parquet, "
        "DIR/dead_letter/*.parquet and DIR/summary.json. Unrecognised flags go to Beam.",
    )
    parser.add_argument(
        "--catalog", required=True, help="CSV / JSONL / Parquet of track_id,uri[,tags] (local or gs://)"
    )
    parser.add_argument(
        "--model",
        required=True,
        help="a pretrained name (musicnn-mtt, musicnn-msd) or a serving-model directory (trainer export)",
    )
    parser.add_argument("--output", required=True, help=f"output directory (local or gs://): {outputs.RULES}")
    parser.add_argument(
        "--incremental", action="store_true", help="skip tracks already tagged in OUTPUT by the same model version"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="patches per model call (%(default)s; larger batches cost memory, not speed, on CPU)",
    )
    parser.add_argument(
        "--max-patches-per-track", type=int, default=None, help="tag only the first N patches (~3 s each) of a track"
    )
    parser.add_argument(
        "--precision",
        choices=("float32", "bfloat16"),
        default="float32",
        help="bfloat16: faster, scores differ by up to ~0.01; needs oneDNN on a CPU with AMX or "
        "AVX512-BF16 (refused elsewhere)",
    )
    parser.add_argument(
        "--progress-every", type=float, default=5.0, help="seconds between progress lines on stderr (%(default)s)"
    )
    parser.add_argument(
        "--cache-dir", default=None, help="pretrained model cache (default $TAGSCALE_CACHE or ~/.cache/tagscale)"
    )
    stages.DecodeOptions.add_arguments(parser)
    tag_output.add_arguments(parser)
    parser.add_argument(
        "--require-commercial", action="store_true", help="refuse a model not known to allow commercial use"
    )
    args, beam_args = parser.parse_known_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if (args.num_shards is not None and args.num_shards < 1) or args.target_shard_bytes < 1:
        parser.error("--num-shards and --target-shard-bytes must be >= 1")
    from model import pretrained

    try:
        decode = stages.DecodeOptions.from_args(args)
    except ValueError as error:
        parser.error(str(error))
    config = TagConfig(
        catalog=args.catalog,
        model=beam_util.worker_path(pretrained.resolve_model(args.model, args.cache_dir)),
        output=beam_util.worker_path(outputs.normalize(args.output)),
        incremental=args.incremental,
        batch_size=args.batch_size,
        max_patches_per_track=args.max_patches_per_track,
        precision=args.precision,
        progress_every_s=args.progress_every,
        decode=decode,
        num_shards=args.num_shards,
        target_shard_bytes=args.target_shard_bytes,
        require_commercial=args.require_commercial,
        segments=args.segments,
    )
    return config, beam_args


def run(argv: list[str] | None = None) -> dict:
    """Run the tag pipeline to completion; return the summary it wrote.

    The run holds ``--output``'s lock, writes into a staging directory and publishes only when
    the pipeline has finished: a run that fails, is killed or fills the disk leaves the
    previous output as it was.
    """
    config, beam_args = parse_args(argv)
    check_reachable(config.catalog, config.output)
    outputs.check_output(
        config.output, catalog=config.catalog, catalog_audio=audio_uris(config.catalog), entries=tuple(layout.ENTRIES)
    )  # checks the catalog too
    tags, info = export.read_model_info(config.model)
    if config.precision == "bfloat16" and beam_util.is_local(beam_args) and (reason := bfloat16_unavailable()):
        raise TagscaleError(f"--precision bfloat16: {reason}; use float32 here")  # else oneDNN aborts the run
    if config.require_commercial:  # refused before any work
        provenance.require_commercial(config.model, info)
    if config.incremental:  # refused before anything is written
        require_same_model(config.output, {"name": info.get("name", "model"), "version": info["version"]})
    with publish.staged_run(config.output, "tag", entries=layout.ENTRIES, commit=layout.COMMIT) as staging:
        summary = run_staged(config, beam_args, staging, tags=tags, info=info)
    return summary


def require_same_model(output: str, model: dict) -> None:
    """One model per run folder: refuse an ``--incremental`` run of ``model`` into ``output``
    when the rows there are another model's (or another version's).

    Raises
    ------
    TagscaleError
        Naming both models; a new model version is a new run (``tagscale diff`` compares two).
    """
    live = fileio.join(output, layout.TAGS)
    if not manifest.tag_files(live):
        return
    there = reader.run_model(live)  # the model column only; refuses a folder that already holds two models
    if there is not None and (there["name"], there["version"]) != (model["name"], model["version"]):
        raise TagscaleError(
            f"--incremental: {output} holds rows of {there['name']} version {there['version']}, not "
            f"{model['name']} version {model['version']}: one model per run folder; tag into a new --output "
            "(tagscale diff compares two runs)"
        )


def run_staged(
    config: TagConfig, beam_args: list[str], staging: publish.Staging, *, tags: list[str], info: dict
) -> dict:
    """The pipeline into ``staging``, then the manifest and the summary (the caller publishes)."""
    run_id = staging.run_id
    live_tags = fileio.join(config.output, layout.TAGS)
    kept = [path.rsplit("/", 1)[-1] for path in manifest.tag_files(live_tags)] if config.incremental else []
    kept_segments = manifest.segment_files(live_tags) if config.incremental else None
    if manifest.keep_segments(config.segments, config.incremental, kept, kept_segments) != config.segments:
        LOG.warning("this output has a segments table: the incremental run writes segments too")
        config = dataclasses.replace(config, segments=True)
    if not kept:
        kept_segments = None  # nothing kept: the run's own segments, if any, are the table
    kept_segment_names = [path.rsplit("/", 1)[-1] for path in kept_segments or []]
    staging.carry_over(layout.TAGS, kept + kept_segment_names)
    existing = [fileio.join(live_tags, name) for name in kept]
    start = time.monotonic()
    with beam_util.make_pipeline(beam_args) as pipeline:
        build_pipeline(
            pipeline,
            dataclasses.replace(config, output=staging.dir),
            tags=tags,
            info=info,
            existing=existing,
            run_id=run_id,
        )
    stats = stages.read_stats(pipeline.result)
    origin = provenance.run_provenance(config.catalog, config.model, info, int(stats.get("tracks_in", 0)))
    names = kept + tag_output.run_files(staging.path(layout.TAGS), run_id)
    segment_names = (
        kept_segment_names + tag_output.run_segment_files(staging.path(layout.TAGS), run_id)
        if config.segments
        else None
    )
    manifest.write_tags_manifest(
        staging.path(layout.TAGS), names, run_id=run_id, provenance=origin, segment_names=segment_names
    )
    dead_letter.write_manifest(staging.dir, run_id=run_id)
    summary = {
        "tracks_in": int(stats.get("tracks_in", 0)),
        "tagged": int(stats.get("tagged", 0)),
        "skipped": int(stats.get("skipped", 0)),
        "failed": int(stats.get("failed", 0)),
        "audio_seconds": round(stats.get("audio_ms", 0) / 1000, 3),
        "wall_seconds": round(time.monotonic() - start, 2),
        "model": {"name": info.get("name"), "version": info["version"], "path": config.model},
        "incremental": config.incremental,
        "segments": config.segments,
        "run_id": run_id,
        "output": config.output,
    }
    fileio.write_text(staging.path(layout.SUMMARY), json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    summary = run(argv)
    print(
        f"tagged {summary['tagged']} of {summary['tracks_in']} tracks with {summary['model']['name']} "
        f"({summary['skipped']} skipped as already tagged, {summary['failed']} in dead_letter/) "
        f"in {summary['wall_seconds']:.0f} s -> {fileio.join(summary['output'], layout.TAGS)}/"
    )
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    beam_util.skip_unused_imports()
    from runtime.errors import run_command

    sys.exit(run_command("tag", main))
