"""gs:// end to end against a local GCS emulator: catalogs and audio read from gs://, tag
Parquet written to gs://, incremental re-runs reading gs:// output.

What is not covered here, and why: tf.Transform writes transform_fn/ and TensorFlow reads
shards through TensorFlow's own GCS filesystem, which cannot be pointed at an emulator
(it has no endpoint override); featurize output and training on gs:// run on real GCS only.
"""

import io
import json

import pyarrow.parquet as pq
import pytest
from gcs_emulator import running_emulator

from pipelines import featurize, tag

BUCKET = "tagscale-test"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """The emulator with a catalog of 8 generated tracks (4 formats) and one missing file under gs://."""
    import soundfile
    from made import synth_tone

    with running_emulator(BUCKET) as client:
        bucket = client.bucket(BUCKET)
        formats = [
            ("wav", "WAV", "PCM_16"),
            ("flac", "FLAC", "PCM_16"),
            ("ogg", "OGG", "VORBIS"),
            ("mp3", "MP3", "MPEG_LAYER_III"),
        ]
        lines = ["track_id,uri,tags"]
        for i in range(8):
            ext, fmt, subtype = formats[i % 4]
            buffer = io.BytesIO()
            soundfile.write(
                buffer, synth_tone(4.0 + i % 3, 22050, channels=2, seed=i), 22050, format=fmt, subtype=subtype
            )
            bucket.blob(f"audio/t{i}.{ext}").upload_from_string(buffer.getvalue())
            lines.append(f"t{i},gs://{BUCKET}/audio/t{i}.{ext},{'low' if i % 2 else 'high'}")
        lines.append(f"gone,gs://{BUCKET}/audio/gone.mp3,low")
        bucket.blob("catalog.csv").upload_from_string("\n".join(lines) + "\n")
        yield client


@pytest.mark.slow
def test_featurize_reads_catalog_and_audio_from_gcs(gcs, tmp_path):
    metadata = featurize.run(
        [
            "--catalog",
            f"gs://{BUCKET}/catalog.csv",
            "--output",
            str(tmp_path / "features"),
            "--valid-fraction",
            "0",
            "--test-fraction",
            "0",
        ]
    )
    assert (metadata["tracks_in"], metadata["tracks_ok"], metadata["tracks_failed"]) == (9, 8, 1)
    assert sorted(metadata["tags"]) == ["high", "low"]
    assert metadata["files"]["mel"]["train"] == ["mel/train-00000-of-00001.tfrecord"]
    assert (tmp_path / "features" / "mel" / "train-00000-of-00001.tfrecord").stat().st_size > 0
    (dead,) = pq.read_table(tmp_path / "features" / "dead_letter").to_pylist()
    assert dead["track_id"] == "gone" and dead["stage"] == "decode" and "gone.mp3" in dead["error"]


@pytest.mark.slow
def test_tag_writes_parquet_to_gcs_and_reruns_incrementally(gcs, tmp_path):
    from made import small_model_dir

    model = small_model_dir(tmp_path / "model")
    output = f"gs://{BUCKET}/tagged"
    args = ["--catalog", f"gs://{BUCKET}/catalog.csv", "--model", model, "--output", output, "--batch-size", "4"]
    summary = tag.run(args)
    assert (summary["tracks_in"], summary["tagged"], summary["failed"]) == (9, 8, 1)
    bucket = gcs.bucket(BUCKET)
    names = sorted(blob.name for blob in bucket.list_blobs(prefix="tagged/"))
    parquet = [name for name in names if name.startswith("tagged/tags/") and name.endswith(".parquet")]
    assert (
        len(parquet) == 1
        and "tagged/summary.json" in names
        and not any("/tmp/" in name or "beam-temp" in name for name in names)
    )
    table = pq.read_table(io.BytesIO(bucket.blob(parquet[0]).download_as_bytes()))
    assert sorted(table.column("track_id").to_pylist()) == [f"t{i}" for i in range(8)]
    assert json.loads(bucket.blob("tagged/summary.json").download_as_text())["tagged"] == 8
    again = tag.run(args + ["--incremental"])
    assert (again["tagged"], again["skipped"], again["failed"]) == (0, 8, 1)
