"""featurize: a catalog -> waveform and log-mel TFRecord shards + tf.Transform statistics.

    python -m pipelines.featurize --catalog catalog.csv --output features/ [Beam flags]

Stages, each a plain function wrapped by a small PTransform:

    ReadCatalog -> DecodeTracks -> CutExamples -> SplitByTrackId
      -> tf.Transform (analyze on train; transform train/valid/test) -> WriteShards
    every failure -> WriteDeadLetter;  counts -> metadata.json

An *example* is one 187-frame patch of a track (about 3 s): ``waveform`` holds its
48,128 samples at 16 kHz and ``log_mel`` its (187, 96) log-mel, normalised per mel band by
the training split's mean and standard deviation (see :mod:`model.dsp`). ``labels`` is the
track's multi-hot tag vector over the top-K tag vocabulary.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import logging
import sys

import apache_beam as beam
import numpy as np

from model import dsp, features
from pipelines import beam_util, dead_letter, fileio, stages
from pipelines.catalog import ReadCatalog, Track

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
    num_shards: int = 4

    def __post_init__(self):
        if not 0 <= self.valid_fraction < 1 or not 0 <= self.test_fraction < 1:
            raise ValueError("valid and test fractions must be in [0, 1)")
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError("valid + test fractions must leave some tracks for training")
        if self.num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {self.num_shards}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


# ----------------------------------------------------------------------- plain functions


def split_of(track_id: str, *, valid_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """Deterministic split from a hash of the track_id (stable across runs and machines)."""
    bucket = int.from_bytes(hashlib.sha256(track_id.encode("utf-8")).digest()[:8], "big") / 2**64
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + valid_fraction:
        return "valid"
    return "train"


def track_record_batch(track: Track, samples: np.ndarray, *, max_patches: int | None = None):
    """The raw tf.Transform input of one track: an Arrow RecordBatch with one row per patch.

    Arrow keeps the 48,128-sample patches as one contiguous buffer; tf.Transform reads it
    without the per-float Python work that instance dicts cost.
    """
    import pyarrow as pa

    patches = dsp.patch_waveform(samples, max_patches=max_patches)  # (patches, samples)
    count = len(patches)

    def lists(values: pa.Array, per_row: int) -> pa.Array:
        return pa.LargeListArray.from_arrays(pa.array(np.arange(count + 1) * per_row, pa.int64()), values)

    tags = [tag.encode("utf-8") for tag in track.tags]
    return pa.RecordBatch.from_arrays(
        [
            lists(pa.array([track.track_id.encode("utf-8")] * count, pa.large_binary()), 1),
            lists(pa.array(np.arange(count), pa.int64()), 1),
            lists(pa.array(patches.reshape(-1), pa.float32()), dsp.PATCH_SAMPLES),
            lists(pa.array(tags * count, pa.large_binary()), len(tags)),
        ],
        schema=features.raw_arrow_schema(),
    )


# ------------------------------------------------------------------------ PTransforms


def shard_of(track_id: bytes, num_shards: int) -> int:
    """The shard of a track: a stable hash, so all its patches share a shard in every run."""
    return int.from_bytes(hashlib.sha256(b"shard:" + track_id).digest()[:8], "big") % num_shards


def keyed_examples(batch_and_passthrough, *, num_shards: int):
    """tf.Transform's output RecordBatch -> ``(shard, (track_id, patch_index, mel, waveform))``
    with both serialized tf.train.Examples.

    tfx_bsl's C++ encoder is ~20x faster than building Example protos in Python, which
    spends its time copying 48,128 floats per waveform one by one into protobuf lists.
    """
    from tfx_bsl.coders import example_coder

    record_batch, _ = batch_and_passthrough
    encoded = {
        kind: example_coder.RecordBatchToExamplesEncoder().encode(record_batch.select(list(columns)))
        for kind, columns in features.SHARD_COLUMNS.items()
    }
    track_ids = [values[0] for values in record_batch.column("track_id").to_pylist()]
    patch_indices = [values[0] for values in record_batch.column("patch_index").to_pylist()]
    for row, (track_id, patch_index) in enumerate(zip(track_ids, patch_indices)):
        mel, waveform = (deterministic(encoded[kind][row]) for kind in ("mel", "waveform"))
        yield shard_of(track_id, num_shards), (track_id, patch_index, mel, waveform)


def deterministic(serialized: bytes) -> bytes:
    """Re-serialize an Example with its feature map in key order (the C++ encoder's map order
    varies between processes), so equal examples are equal bytes; ~15 us per waveform."""
    from tensorflow.core.example import example_pb2

    return example_pb2.Example.FromString(serialized).SerializeToString(deterministic=True)


def write_shard(keyed, *, output: str, split: str, num_shards: int) -> list[str]:
    """Write one shard of a split, examples sorted by (track_id, patch_index), to
    ``{output}/{mel,waveform}/{split}-SSSSS-of-NNNNN.tfrecord.gz``.

    Sorting makes the files byte-identical across runs, whatever order workers produced the
    examples in; a shard holds 1/num_shards of the split, so it fits a worker's memory.
    """
    import tensorflow as tf

    shard, items = keyed
    examples = sorted(item for item in items if item is not None)
    paths = []
    for kind, position in (("mel", 2), ("waveform", 3)):
        path = fileio.join(output, kind, f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord.gz")
        with tf.io.TFRecordWriter(path, options=tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
            for example in examples:
                writer.write(example[position])
        paths.append(path)
    return paths


class WriteShards(beam.PTransform):
    """Transformed examples of one split -> ``num_shards`` gzip TFRecord files each of mel and
    waveform examples, every file written (an empty one when no track hashes to it)."""

    def __init__(self, output: str, split: str, num_shards: int):
        super().__init__()
        self._output = output
        self._split = split
        self._num_shards = num_shards

    def expand(self, record_batches):
        import tensorflow as tf

        for kind in features.SHARD_COLUMNS:
            tf.io.gfile.makedirs(fileio.join(self._output, kind))
        every_shard = record_batches.pipeline | "EveryShard" >> beam.Create([(i, None) for i in range(self._num_shards)])
        examples = record_batches | "EncodeExamples" >> beam.FlatMap(keyed_examples, num_shards=self._num_shards)
        return (
            (examples, every_shard)
            | "WithEmptyShards" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.FlatMap(write_shard, output=self._output, split=self._split, num_shards=self._num_shards)
        )


def build_pipeline(pipeline: beam.Pipeline, config: FeaturizeConfig) -> None:
    """Add the featurize graph to ``pipeline``."""
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx_bsl.public import tfxio
    from tfx_bsl.tfxio import tensor_representation_util

    output = config.output
    catalog = pipeline | "ReadCatalog" >> ReadCatalog(config.catalog)
    decoded = catalog["tracks"] | "DecodeTracks" >> stages.DecodeTracks(config.decode)

    hash_split = functools.partial(split_of, valid_fraction=config.valid_fraction, test_fraction=config.test_fraction)

    def split(track: Track) -> str:  # the catalog's split column when it has one, else the hash
        return track.split or hash_split(track.track_id)

    split_batches = decoded.decoded | "CutExamples" >> beam.Map(
        lambda item: (split(item[0]), track_record_batch(item[0], item[1], max_patches=config.max_patches_per_track))
    )
    by_split = split_batches | "SplitByTrack" >> beam.Partition(
        lambda pair, _: features.SPLITS.index(pair[0]), len(features.SPLITS)
    )
    by_split = [part | f"BatchesOf{name.title()}" >> beam.Values() for part, name in zip(by_split, features.SPLITS)]

    schema = schema_utils.schema_from_feature_spec(features.raw_feature_spec())
    raw_config = tfxio.TensorAdapterConfig(features.raw_arrow_schema(), tensor_representation_util.InferTensorRepresentationsFromSchema(schema))
    with tft_beam.Context(temp_dir=fileio.join(output, "tmp", "tft")):
        (train, _), transform_fn = (
            by_split[0],
            raw_config,
        ) | "AnalyzeAndTransformTrain" >> tft_beam.AnalyzeAndTransformDataset(
            functools.partial(features.preprocessing_fn, top_k=config.top_k), output_record_batches=True
        )
        transformed = {"train": train}
        for index, name in enumerate(features.SPLITS[1:], start=1):
            transformed[name], _ = ((by_split[index], raw_config), transform_fn) | (
                f"Transform{name.title()}" >> tft_beam.TransformDataset(output_record_batches=True)
            )
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(output)
    for name in features.SPLITS:
        _ = transformed[name] | f"WriteShards{name.title()}" >> WriteShards(output, name, config.num_shards)

    failures = (catalog[dead_letter.TAG], decoded[dead_letter.TAG]) | "AllDeadLetters" >> beam.Flatten()
    _ = failures | "WriteDeadLetter" >> dead_letter.WriteDeadLetter(output)

    def track_stats(item):
        track, samples = item
        name = split(track)
        from_catalog = [("catalog_split_tracks", 1)] if track.split else []
        return [("tracks_ok", 1), (f"{name}_tracks", 1), ("audio_seconds", len(samples) / dsp.SAMPLE_RATE), *from_catalog]

    stats = (
        catalog["tracks"] | "CountUnique" >> beam.Map(lambda _: ("tracks_in", 1)),
        catalog[dead_letter.TAG] | "CountBadRows" >> beam.Map(lambda _: ("tracks_in", 1)),
        failures | "CountFailed" >> beam.Map(lambda _: ("tracks_failed", 1)),
        decoded.decoded | "CountOk" >> beam.FlatMap(track_stats),
        split_batches | "CountExamples" >> beam.MapTuple(lambda name, batch: (f"{name}_examples", batch.num_rows)),
    ) | "AllStats" >> beam.Flatten()
    _ = stats | "CountStats" >> stages.CountStats(fileio.join(output, "tmp", "stats.json"))


def write_metadata(config: FeaturizeConfig) -> dict:
    """Combine the pipeline's counts with the vocabulary into ``DIR/metadata.json``."""
    stats = json.loads(fileio.read_text(fileio.join(config.output, "tmp", "stats.json")))
    vocabulary_path = fileio.join(config.output, "transform_fn", "assets", features.TAG_VOCABULARY)
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
            if stats.get("catalog_split_tracks") else "hash of track_id"
        ),
        "audio_seconds": round(float(stats.get("audio_seconds", 0.0)), 3),
        "signal": dsp.constants(),
        "top_k": config.top_k,
        "tags": tags,
        "config": dataclasses.asdict(config),
        "example": "one 187-frame patch (~3 s): waveform[48128] at 16 kHz, log_mel[187, 96] normalised per band, labels[top_k] multi-hot",
    }
    fileio.write_text(fileio.join(config.output, "metadata.json"), json.dumps(metadata, indent=2))
    fileio.delete_tree(fileio.join(config.output, "tmp"))
    return metadata


# ----------------------------------------------------------------------------- command


def parse_args(argv: list[str] | None) -> tuple[FeaturizeConfig, list[str]]:
    parser = argparse.ArgumentParser(
        prog="tagscale featurize",
        description="Beam pipeline: catalog -> waveform and log-mel TFRecord shards, tf.Transform statistics, "
        "dead letters and metadata.json. Unrecognised flags go to Beam (e.g. --runner, --direct_running_mode).",
    )
    parser.add_argument("--catalog", required=True, help="CSV / JSONL / Parquet of track_id,uri[,tags] (local or gs://)")
    parser.add_argument("--output", required=True, help="output directory (local or gs://)")
    parser.add_argument("--top-k", type=int, default=50, help="tag vocabulary size: the K most frequent tags (50)")
    parser.add_argument("--valid-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    stages.DecodeOptions.add_arguments(parser)
    parser.add_argument("--max-patches-per-track", type=int, default=None, help="keep only the first N patches (~3 s each) of a track")
    parser.add_argument("--num-shards", type=int, default=4, help="files per split and kind; pick so a shard is 100-500 MB (%(default)s)")
    args, beam_args = parser.parse_known_args(argv)
    try:
        config = FeaturizeConfig(
            catalog=args.catalog,
            output=args.output.rstrip("/"),
            top_k=args.top_k,
            valid_fraction=args.valid_fraction,
            test_fraction=args.test_fraction,
            decode=stages.DecodeOptions.from_args(args),
            max_patches_per_track=args.max_patches_per_track,
            num_shards=args.num_shards,
        )
    except ValueError as error:
        parser.error(str(error))
    return config, beam_args


def run(argv: list[str] | None = None) -> dict:
    """Run the pipeline to completion and return the metadata it wrote."""
    config, beam_args = parse_args(argv)
    with beam_util.make_pipeline(beam_args) as pipeline:
        build_pipeline(pipeline, config)
    if beam_util.is_dry_run(beam_args):
        return {}  # DataflowRunner --dry_run=True: the job was built and translated, nothing ran
    return write_metadata(config)


def main(argv: list[str] | None = None) -> int:
    metadata = run(argv)
    if metadata:
        splits = ", ".join(f"{name} {counts['tracks']} tracks/{counts['examples']} examples" for name, counts in metadata["splits"].items())
        print(
            f"featurized {metadata['tracks_ok']}/{metadata['tracks_in']} tracks "
            f"({metadata['audio_seconds']:.0f} s of audio; {metadata['tracks_failed']} in dead_letter/): {splits}; "
            f"{len(metadata['tags'])} tags"
        )
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    from model.errors import run_command

    sys.exit(run_command("featurize", main))
