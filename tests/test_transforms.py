"""Each composite PTransform of the tag pipeline on tiny inputs: TestPipeline + assert_that.

featurize's transforms (DecodeTracks, WriteShards) are tested the same way in test_featurize.py.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from made import SMALL_MODEL_TAGS as TAGS

from model import dsp, export
from pipelines import dead_letter, skip, stages, tag, tag_output
from pipelines.catalog import ReadCatalog, Track
from runfolder.schema import TAGS_SCHEMA

# Every test here runs a Beam stage on a handful of elements (TestPipeline on the local runner):
# about a second each on a shared 2-core CPU, so in the fast loop (pytest.ini: slow is by time).

MODEL = {"name": "m", "version": "v1"}


def tag_row(track_id: str, version: str) -> dict:
    return {
        "track_id": track_id,
        "uri": f"/{track_id}.wav",
        "model": {"name": "m", "version": version},
        "duration_s": 3.0,
        "n_patches": 1,
        "scores": [{"tag": "a", "score": 0.5}],
        "embedding": [0.0, 1.0],
    }


def test_read_catalog_skips_the_tracks_one_model_version_tagged(tmp_path):
    existing = tmp_path / "run.parquet"
    rows = [tag_row("a", "v1"), tag_row("b", "v0")]  # b was tagged by another version: tag it again
    pq.write_table(pyarrow.Table.from_pylist(rows, schema=TAGS_SCHEMA), existing)
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("track_id,uri\na,/a.wav\nb,/b.wav\nc,/c.wav\n")
    with TestPipeline() as pipeline:
        read = pipeline | ReadCatalog(str(catalog), skip=skip.AlreadyTagged([str(existing)], "v1"))
        assert_that(read["tracks"] | "TodoIds" >> beam.Map(lambda t: t.track_id), equal_to(["b", "c"]), label="todo")
        assert_that(read["skipped"] | beam.CombineGlobally(sum), equal_to([1]), label="skipped")


def test_read_catalog_without_a_skip_reads_every_track(tmp_path):
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("track_id,uri\na,/a.wav\nb,/b.wav\n")
    with TestPipeline() as pipeline:
        read = pipeline | ReadCatalog(str(catalog))
        assert_that(read["tracks"] | beam.Map(lambda t: t.track_id), equal_to(["a", "b"]), label="todo")
        assert_that(read["skipped"], equal_to([]), label="skipped")


def test_tag_tracks_means_the_models_patch_outputs(small_model):
    rng = np.random.default_rng(0)
    decoded = [
        (Track("long", "/long.wav"), rng.normal(0, 0.1, 3 * dsp.PATCH_HOP_SAMPLES).astype(np.float32)),
        (Track("short", "/short.wav"), rng.normal(0, 0.1, dsp.SAMPLE_RATE).astype(np.float32)),
    ]
    model = export.load_serving_model(small_model)
    expected = {}
    for track, samples in decoded:
        outputs = model.predict(dsp.patch_waveform(samples))
        expected[track.track_id] = (len(outputs["scores"]), outputs["scores"].mean(axis=0))
    tags, info = export.read_model_info(small_model)
    config = tag.TagConfig(catalog="unused", model=small_model, output="unused", batch_size=4)

    def check(rows):
        assert sorted(row["track_id"] for row in rows) == ["long", "short"]
        for row in rows:
            n_patches, scores = expected[row["track_id"]]
            assert row["n_patches"] == n_patches
            got = {item["tag"]: item["score"] for item in row["scores"]}
            np.testing.assert_allclose([got[t] for t in TAGS], scores, atol=1e-6)
            assert [item["score"] for item in row["scores"]] == sorted(got.values(), reverse=True)
            assert row["model"] == {"name": info["name"], "version": info["version"]}

    with TestPipeline() as pipeline:
        rows = pipeline | beam.Create(decoded) | tag.TagTracks(config, tags=tags, info=info, total=None)
        assert_that(rows, check)


def test_write_tags_writes_one_parquet_file_of_the_rows(tmp_path):
    rows = [tag_row("a", "v1"), tag_row("b", "v1")]
    with TestPipeline() as pipeline:
        written = pipeline | beam.Create(rows) | tag_output.WriteTags(str(tmp_path), "r1", TAGS_SCHEMA)
        assert_that(
            written | beam.Map(lambda path: path.rsplit("/", 1)[-1]), equal_to(["run-r1-00000-of-00001.parquet"])
        )
    table = pq.read_table(tmp_path / "run-r1-00000-of-00001.parquet")
    assert table.schema.equals(TAGS_SCHEMA)
    assert table.to_pylist() == [
        {**row, "scores": [{"tag": "a", "score": 0.5}], "embedding": [0.0, 1.0]} for row in rows
    ]


def test_write_dead_letter_keeps_every_record(tmp_path):
    records = [dead_letter.record(track_id=f"t{i}", uri=f"/t{i}.mp3", stage="decode", error="bad") for i in range(3)]
    with TestPipeline() as pipeline:
        _ = pipeline | beam.Create(records) | dead_letter.WriteDeadLetter(str(tmp_path))
    (path,) = (tmp_path / "dead_letter").glob("part-*.parquet")
    assert sorted(pq.read_table(path).to_pylist(), key=lambda r: r["track_id"]) == records


def test_count_stats_sums_pairs_into_the_runs_metrics_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with TestPipeline() as pipeline:
        pairs = pipeline | beam.Create([("tracks_in", 1), ("tracks_in", 1), ("audio_ms", 2500), ("audio_ms", 500)])
        _ = pairs | stages.CountStats()
    assert stages.read_stats(pipeline.result) == {"audio_ms": 3000, "tracks_in": 2}
    assert not list(tmp_path.iterdir())


def test_count_stats_refuses_a_number_a_counter_would_truncate():
    with pytest.raises(Exception, match="statistic 'audio_seconds' must be counted in integers"):
        with TestPipeline() as pipeline:
            _ = pipeline | beam.Create([("audio_seconds", 2.5)]) | stages.CountStats()
