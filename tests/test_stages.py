"""pipelines.stages: decoding several tracks at once gives what decoding one at a time gives."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.pvalue import TaggedOutput
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.windowed_value import WindowedValue

from pipelines import stages
from pipelines.catalog import Track


def run_bundle(tracks, concurrency):
    """Drive the decode DoFn through one bundle as a runner does: ``[(track_id, bytes or reason)]`` in
    output order (what ``finish_bundle`` hands on must come windowed)."""
    fn = stages._DecodeFn(stages.DecodeOptions(), concurrency)
    fn.setup()
    fn.start_bundle()
    outputs = [out for track in tracks for out in fn.process(track)]
    finished = list(fn.finish_bundle() or [])
    fn.teardown()
    for out in finished:
        assert isinstance(out.value if isinstance(out, TaggedOutput) else out, WindowedValue)
    outputs += [TaggedOutput(o.tag, o.value.value) if isinstance(o, TaggedOutput) else o.value for o in finished]
    return [
        (o.value["track_id"], o.value["error"]) if isinstance(o, TaggedOutput) else (o[0].track_id, o[1].tobytes())
        for o in outputs
    ]


@pytest.fixture
def tracks(write_audio, tmp_path):
    made = [
        Track(f"t{i}", str(write_audio(f"t{i}{ext}", seconds=2.0 + i, seed=i)))
        for i, ext in enumerate([".wav", ".flac", ".ogg", ".mp3", ".wav", ".flac"])
    ]
    (tmp_path / "text.wav").write_text("not audio\n" * 20)
    return (
        made[:3] + [Track("gone", str(tmp_path / "gone.wav"))] + made[3:] + [Track("text", str(tmp_path / "text.wav"))]
    )


@pytest.mark.parametrize("concurrency", [2, 3])
def test_concurrent_decoding_equals_one_at_a_time_in_input_order(tracks, concurrency):
    one = run_bundle(tracks, 1)
    assert [track_id for track_id, _ in one] == [t.track_id for t in tracks]
    assert run_bundle(tracks, concurrency) == one  # same order, same samples bit for bit, same reasons
    assert dict(one)["gone"].startswith("file not found") and isinstance(dict(one)["text"], str)
    assert all(np.frombuffer(value, np.float32).size > 16000 for key, value in one if key not in ("gone", "text"))


def test_decode_tracks_in_a_pipeline_routes_every_track(tracks):
    with TestPipeline() as pipeline:
        out = pipeline | beam.Create(tracks) | stages.DecodeTracks(stages.DecodeOptions(), 3)
        assert_that(
            out.decoded | "Ids" >> beam.Map(lambda pair: pair[0].track_id), equal_to([f"t{i}" for i in range(6)])
        )
        failed = out.dead_letter | "Failed" >> beam.Map(lambda record: record["track_id"])
        assert_that(failed, equal_to(["gone", "text"]), label="CheckFailed")
