"""featurize: a catalog -> waveform and log-mel TFRecord shards + tf.Transform statistics.

    python -m pipelines.featurize --catalog catalog.csv --output features/ [Beam flags]

Stages, each a plain function wrapped by a small PTransform:

    ReadCatalog -> DecodeTracks -> Spill (patches + log-mel to OUTPUT/tmp/spill, a TrackRef out)
      -> Analyze (tf.Transform over the training tracks read back) -> OUTPUT/transform_fn
      -> ShardCounts -> WriteShards (group refs by shard, stream tracks through the transform)
    every failure -> WriteDeadLetter;  counts (Beam counters) -> metadata.json

Only TrackRefs and counts cross a stage boundary (Beam's local runner holds those in memory),
so memory does not grow with the catalog: see :mod:`pipelines.spill` and :mod:`pipelines.shards`.

An *example* is one patch of a track (:func:`example_description`; the sizes are
:mod:`model.dsp`'s constants, about 3 s): ``waveform`` holds its samples as int16 PCM and
``log_mel`` its (frames, mel bands) log-mel, normalised per mel band by the training split's
mean and standard deviation (see :mod:`model.features`).
``labels`` is the track's multi-hot tag vector over the top-K tag vocabulary. A track's last
patch also holds the frames after it (``log_mel_tail`` / ``waveform_tail``, up to a patch less
one frame: :func:`model.features.tail_feature_spec`), so that training crops can reach its last frame.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import sys

import apache_beam as beam
import numpy as np

from model import dsp, features
from pipelines import beam_util, buckets, dead_letter, shards, spill, stages
from pipelines.catalog import ReadCatalog, Track
from pipelines.catalog_checks import audio_uris, check_reachable
from pipelines.storage import fileio, outputs, publish
from runfolder import layout

LOG = logging.getLogger("tagscale.featurize")


@dataclasses.dataclass(frozen=True)
class FeaturizeConfig:
    catalog: str
    output: str
    top_k: int = 50
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    decode: stages.DecodeOptions = stages.DecodeOptions()
    max_patches_per_track: int | None = None
    num_shards: int | None = None
    target_shard_bytes: int = shards.DEFAULT_TARGET_BYTES
    decode_threads: int = 1  # tracks decoded at once by each worker (beam_util.decode_threads)

    def __post_init__(self):
        if not 0 <= self.valid_fraction < 1 or not 0 <= self.test_fraction < 1:
            raise ValueError("valid and test fractions must be in [0, 1)")
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError("valid + test fractions must leave some tracks for training")
        if self.num_shards is not None and self.num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {self.num_shards}")
        if self.target_shard_bytes < 1:
            raise ValueError(f"target shard bytes must be >= 1, got {self.target_shard_bytes}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


# ----------------------------------------------------------------------- plain functions


def split_of(track_id: str, *, valid_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """The split of a track: a stable hash of its track_id (the same in every run and machine).

    ``test_fraction`` of the tracks go to test and ``valid_fraction`` to valid, the rest to train.
    """
    bucket = buckets.unit_hash(track_id)
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + valid_fraction:
        return "valid"
    return "train"


def track_split(track: Track, **fractions) -> str:
    """The split of a catalog track, the one call the pipeline makes: the catalog's ``split``
    column when the row has one (a dataset's official split), else the hash of its track_id."""
    return track.split or split_of(track.track_id, **fractions)


class _SpillFn(beam.DoFn):
    """(track, samples) -> :class:`spill.TrackRef`, the patches and their log-mel (computed
    once, here) written to the spill; the samples go no further than this stage."""

    def __init__(self, spill_dir: str, split, max_patches: int | None):
        self._spill_dir, self._split, self._max_patches = spill_dir, split, max_patches

    def setup(self):
        self._log_mel = spill.LogMel()

    def process(self, item):
        track, samples = item
        patches = dsp.patch_waveform(samples, max_patches=self._max_patches)
        tail = dsp.tail_frames(len(samples), max_patches=self._max_patches)
        rows = np.concatenate([patches, dsp.tail_patch(samples)[None]]) if tail else patches
        path = spill.spill_path(self._spill_dir, track.track_id)
        spill.write_track(path, rows, self._log_mel(rows))
        yield spill.TrackRef(
            track_id=track.track_id,
            split=self._split(track),
            n_patches=len(patches),
            seconds=len(samples) / dsp.SAMPLE_RATE,
            tags=tuple(track.tags),
            path=path,
            tail_frames=tail,
        )


def analyze(train_refs, config: FeaturizeConfig):
    """tf.Transform's analyze pass over the training tracks, read back from the spill;
    returns the PCollection that exists once ``OUTPUT/transform_fn`` is written."""
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx_bsl.public import tfxio
    from tfx_bsl.tfxio import tensor_representation_util

    schema = schema_utils.schema_from_feature_spec(features.raw_feature_spec())
    raw_config = tfxio.TensorAdapterConfig(
        features.raw_arrow_schema(), tensor_representation_util.InferTensorRepresentationsFromSchema(schema)
    )
    batches = train_refs | "ReadSpill" >> beam.Map(lambda ref: spill.raw_record_batch(ref, spill.read_track(ref)[1]))
    with tft_beam.Context(temp_dir=fileio.join(config.output, "tmp", "tft")):
        transform_fn = (batches, raw_config) | "Analyze" >> tft_beam.AnalyzeDataset(
            functools.partial(features.preprocessing_fn, top_k=config.top_k)
        )
        return transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(config.output)


def build_pipeline(pipeline: beam.Pipeline, config: FeaturizeConfig) -> None:
    """Add the featurize graph to ``pipeline``: only TrackRefs and counts cross its stages."""
    output = config.output
    catalog = pipeline | "ReadCatalog" >> ReadCatalog(config.catalog)
    decoded = catalog["tracks"] | "DecodeTracks" >> stages.DecodeTracks(config.decode, config.decode_threads)
    split = functools.partial(track_split, valid_fraction=config.valid_fraction, test_fraction=config.test_fraction)
    refs = decoded.decoded | "Spill" >> beam.ParDo(
        _SpillFn(fileio.join(output, "tmp", "spill"), split, config.max_patches_per_track)
    )
    train_refs = refs | "TrainOnly" >> beam.Filter(lambda ref: ref.split == "train")
    ready = analyze(train_refs, config)
    counts = refs | "ShardCounts" >> shards.ShardCounts(
        num_shards=config.num_shards, target_bytes=config.target_shard_bytes, top_k=config.top_k
    )
    _ = refs | "WriteShards" >> shards.WriteShards(output, output, counts, ready)

    failures = (catalog[dead_letter.TAG], decoded[dead_letter.TAG]) | "AllDeadLetters" >> beam.Flatten()
    _ = failures | "WriteDeadLetter" >> dead_letter.WriteDeadLetter(output, target_bytes=config.target_shard_bytes)

    def ref_stats(ref):
        return [
            ("tracks_ok", 1),
            (f"{ref.split}_tracks", 1),
            (f"{ref.split}_examples", ref.n_patches),
            ("audio_samples", round(ref.seconds * dsp.SAMPLE_RATE)),  # counters are integers
        ]

    stats = (
        catalog["tracks"] | "CountUnique" >> beam.Map(lambda _: ("tracks_in", 1)),
        catalog[dead_letter.TAG] | "CountBadRows" >> beam.Map(lambda _: ("tracks_in", 1)),
        failures | "CountFailed" >> beam.Map(lambda _: ("tracks_failed", 1)),
        refs | "CountOk" >> beam.FlatMap(ref_stats),
        catalog["tracks"]
        | "CountCatalogSplits" >> beam.FlatMap(lambda track: [("catalog_split_tracks", 1)] if track.split else []),
        counts | "CountShards" >> beam.FlatMap(lambda n: [(f"{split}_shards", n[split]) for split in n]),
    ) | "AllStats" >> beam.Flatten()
    _ = stats | "CountStats" >> stages.CountStats()


def example_description() -> str:
    """What one example holds, in words, from the signal constants (:func:`model.dsp.constants`)."""
    return (
        f"one {dsp.PATCH_FRAMES}-frame patch (~{dsp.PATCH_SECONDS:.0f} s): waveform = {dsp.PATCH_SAMPLES} int16 "
        f"PCM samples at {dsp.SAMPLE_RATE / 1000:g} kHz (bytes, /32768 for float), "
        f"log_mel = {dsp.PATCH_FRAMES} x {dsp.N_MELS} float32 normalised per band (bytes), labels[top_k] multi-hot"
    )


def write_metadata(config: FeaturizeConfig, stats: dict, directory: str | None = None) -> dict:
    """Combine the pipeline's counts (:func:`stages.read_stats`) with the vocabulary into
    ``metadata.json`` in ``directory`` (the run's staging directory; ``config.output`` by default)."""
    directory = directory or config.output
    vocabulary_path = fileio.join(directory, "transform_fn", "assets", features.TAG_VOCABULARY)
    tags = [line for line in fileio.read_text(vocabulary_path).splitlines() if line]
    metadata = {
        "tracks_in": int(stats.get("tracks_in", 0)),
        "tracks_ok": int(stats.get("tracks_ok", 0)),
        "tracks_failed": int(stats.get("tracks_failed", 0)),
        "splits": {
            name: {"tracks": int(stats.get(f"{name}_tracks", 0)), "examples": int(stats.get(f"{name}_examples", 0))}
            for name in features.SPLITS
        },
        "split_source": (
            f"catalog split column ({int(stats['catalog_split_tracks'])} tracks; others by hash)"
            if stats.get("catalog_split_tracks")
            else "hash of track_id"
        ),
        "audio_seconds": round(stats.get("audio_samples", 0) / dsp.SAMPLE_RATE, 3),
        # Exactly this run's shards: readers open these, never a glob (an earlier run with
        # another shard count may have left other files beside them).
        "files": shards.shard_files({name: int(stats.get(f"{name}_shards", 1)) for name in features.SPLITS}),
        "signal": dsp.constants(),
        "top_k": config.top_k,
        "tags": tags,
        "config": dataclasses.asdict(config),
        "example": example_description(),
    }
    fileio.write_text(fileio.join(directory, "metadata.json"), json.dumps(metadata, indent=2))
    fileio.delete_tree(fileio.join(directory, "tmp"))
    return metadata


# ----------------------------------------------------------------------------- command


def parse_args(argv: list[str] | None) -> tuple[FeaturizeConfig, list[str]]:
    parser = argparse.ArgumentParser(
        prog="tagscale featurize",
        description="Beam pipeline: catalog -> waveform and log-mel TFRecord shards, tf.Transform statistics, "
        "dead letters and metadata.json. Unrecognised flags go to Beam (e.g. --runner, --direct_running_mode).",
    )
    parser.add_argument(
        "--catalog", required=True, help="CSV / JSONL / Parquet of track_id,uri[,tags] (local or gs://)"
    )
    parser.add_argument("--output", required=True, help=f"output directory (local or gs://): {outputs.RULES}")
    parser.add_argument("--top-k", type=int, default=50, help="tag vocabulary size: the K most frequent tags (50)")
    parser.add_argument("--valid-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    stages.DecodeOptions.add_arguments(parser)
    parser.add_argument(
        "--max-patches-per-track", type=int, default=None, help="keep only the first N patches (~3 s each) of a track"
    )
    parser.add_argument(
        "--target-shard-bytes",
        type=int,
        default=shards.DEFAULT_TARGET_BYTES,
        help="size shards by data volume: files of about this many bytes per split and kind, "
        "and dead-letter Parquet files of about as many (%(default)s)",
    )
    parser.add_argument(
        "--num-shards", type=int, default=None, help="a fixed number of files per split and kind instead"
    )
    args, beam_args = parser.parse_known_args(argv)
    try:
        config = FeaturizeConfig(
            catalog=args.catalog,
            output=beam_util.worker_path(outputs.normalize(args.output)),
            top_k=args.top_k,
            valid_fraction=args.valid_fraction,
            test_fraction=args.test_fraction,
            decode=stages.DecodeOptions.from_args(args),
            max_patches_per_track=args.max_patches_per_track,
            num_shards=args.num_shards,
            target_shard_bytes=args.target_shard_bytes,
            decode_threads=beam_util.decode_threads(beam_args),
        )
    except ValueError as error:
        parser.error(str(error))
    return config, beam_args


OUTPUT_ENTRIES = [layout.DEAD_LETTER, "mel", "waveform", "transform_fn", "transformed_metadata", "metadata.json"]


def run(argv: list[str] | None = None) -> dict:
    """Run the pipeline to completion and return the metadata it wrote.

    The run holds ``--output``'s lock and writes everything into a staging directory, published
    over the previous output only when finished (metadata.json last): a failed, killed or
    out-of-space run leaves the previous output whole, and no shard of an earlier run survives.
    """
    config, beam_args = parse_args(argv)
    if beam_util.is_dry_run(beam_args):
        with beam_util.make_pipeline(beam_args) as pipeline:
            build_pipeline(pipeline, config)
        return {}  # DataflowRunner --dry_run=True: the job was built and translated, nothing ran
    check_reachable(config.catalog, config.output)
    outputs.check_output(
        config.output, catalog=config.catalog, catalog_audio=audio_uris(config.catalog), entries=tuple(OUTPUT_ENTRIES)
    )
    with publish.staged_run(config.output, "featurize", entries=OUTPUT_ENTRIES, commit="metadata.json") as staging:
        with beam_util.make_pipeline(beam_args) as pipeline:
            build_pipeline(pipeline, dataclasses.replace(config, output=staging.dir))
        dead_letter.write_manifest(staging.dir, run_id=staging.run_id)
        metadata = write_metadata(config, stages.read_stats(pipeline.result), staging.dir)
    return metadata


def main(argv: list[str] | None = None) -> int:
    metadata = run(argv)
    if metadata:
        splits = ", ".join(
            f"{name} {counts['tracks']} tracks/{counts['examples']} examples"
            for name, counts in metadata["splits"].items()
        )
        print(
            f"featurized {metadata['tracks_ok']}/{metadata['tracks_in']} tracks "
            f"({metadata['audio_seconds']:.0f} s of audio; {metadata['tracks_failed']} in dead_letter/): {splits}; "
            f"{len(metadata['tags'])} tags"
        )
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    beam_util.skip_unused_imports()
    from runtime.errors import run_command

    sys.exit(run_command("featurize", main))
