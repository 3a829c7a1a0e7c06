"""Every reader of tag runs (similar, index, calibrate, probe, diff) on foreign files and on gs://
folders: tagdata's loading is shared, so a bad file is one line that names it everywhere."""

import pathlib

import numpy as np
import pyarrow
import pyarrow.parquet as pq
import pytest
from tag_runs import small_run

from infra.cli import main as cli
from runfolder import manifest
from tagruns import calibrate, similar, tagdata


def foreign_run(folder: pathlib.Path, kind: str) -> str:
    """A run folder whose tags/ holds a file that is not tag Parquet."""
    (folder / "tags").mkdir(parents=True)
    path = folder / "tags" / "run-1.parquet"
    if kind == "not parquet":
        path.write_text("hello")
    elif kind == "another schema":
        pq.write_table(pyarrow.table({"a": [1, 2]}), path)
    else:  # the tag columns, scores of the wrong type
        rows = [{"track_id": "t0", "uri": "u", "model": {"name": "m", "version": "v"}, "scores": "high"}]
        pq.write_table(pyarrow.Table.from_pylist(rows), path)
    return str(folder)


@pytest.mark.parametrize("kind", ["not parquet", "another schema", "wrong types"])
def test_foreign_tag_files_are_one_line_in_every_reader(kind, tmp_path, capsys):
    bad = foreign_run(tmp_path / "bad", kind)
    good = small_run(tmp_path / "good", [{"a": 0.9}, {"a": 0.1}], [[1.0, 0.0], [0.0, 1.0]])
    (tmp_path / "labels.csv").write_text("track_id,tag\nt0,a\n")
    labels = ["--labels", str(tmp_path / "labels.csv")]
    for argv in (
        ["similar", "--tags", bad, "t0"],
        ["index", "--tags", bad],
        ["calibrate", "--tags", bad, *labels, "--output", str(tmp_path / "t.json")],
        ["probe", "train", "--tags", bad, *labels, "--output", str(tmp_path / "p")],
        ["diff", "--tags", good, "--tags", bad, "--output", str(tmp_path / "r")],
    ):
        assert cli(argv) == 2, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert err.startswith(f"tagscale {argv[0]}: error: ") and f"{bad}/tags/run-1.parquet" in err  # names the file


def test_gs_tag_output(tmp_path):
    """similar, index, probe and calibrate read and write gs:// folders (against the GCS emulator)."""
    from gcs_emulator import running_emulator

    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(40, 8)).tolist()
    scores = [{"a": float(e[0] > 0) * 0.5 + 0.25, "b": 0.5} for e in embeddings]
    local = small_run(tmp_path / "run", scores, embeddings)
    with running_emulator("beyond-test") as client:
        bucket = client.bucket("beyond-test")
        bucket.blob("run/tags/run-1.parquet").upload_from_filename(manifest.tag_files(local)[0])
        bucket.blob("labels.csv").upload_from_string(
            "track_id,tag\n" + "".join(f"t{i},{'a' if e[0] > 0 else 'b'}\n" for i, e in enumerate(embeddings))
        )
        run = "gs://beyond-test/run"
        assert similar.similar_tracks(run, "t3", k=5) == similar.similar_tracks(local, "t3", k=5)
        assert cli(["index", "--tags", run]) == 0 and bucket.blob("run/index/similar.faiss").exists()
        assert similar.search(run, track_id="t3", k=5) == (similar.similar_tracks(local, "t3", k=5), None)
        assert (
            cli(
                [
                    "calibrate",
                    "--tags",
                    run,
                    "--labels",
                    "gs://beyond-test/labels.csv",
                    "--output",
                    "gs://beyond-test/t.json",
                ]
            )
            == 0
        )
        assert calibrate.load_thresholds("gs://beyond-test/t.json") == {"a": 0.75}
        assert (
            cli(
                [
                    "probe",
                    "train",
                    "--tags",
                    run,
                    "--labels",
                    "gs://beyond-test/labels.csv",
                    "--output",
                    "gs://beyond-test/p",
                ]
            )
            == 0
        )
        assert (
            cli(
                [
                    "probe",
                    "apply",
                    "--tags",
                    run,
                    "--probe",
                    "gs://beyond-test/p",
                    "--output",
                    "gs://beyond-test/probed",
                ]
            )
            == 0
        )
        assert tagdata.load("gs://beyond-test/probed").model["name"] == "p"
