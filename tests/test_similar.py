"""similar and index: exact cosine neighbours, the FAISS index's recall and staleness, its folder's
ownership, on the demo catalog tagged by musicnn-mtt, on the real clips and on small hand-made runs."""

import csv
import json
import pathlib
import shutil

import numpy as np
import pyarrow
import pyarrow.parquet as pq
import pytest
from tag_runs import TAGGED_DEMO_TRACKS, run_tag, small_run

from infra.cli import main as cli
from runfolder import manifest
from runfolder.schema import TAGS_SCHEMA
from runtime.errors import TagscaleError
from tagruns import calibrate, similar, tagdata
from tagruns import diff as drift
from tagruns import labels as label_store


def numpy_neighbours(embeddings: np.ndarray, row: int, k: int):
    """Reference: cosine with plain numpy, self excluded, highest first."""
    e = embeddings.astype(np.float64)
    cosine = e @ e[row] / (np.linalg.norm(e, axis=1) * np.linalg.norm(e[row]))
    cosine[row] = -np.inf
    order = np.argsort(-cosine, kind="stable")[:k]
    return order, cosine[order]


@pytest.mark.slow
def test_similar_excludes_the_query_and_ranks_by_cosine(tagged_demo):
    table = tagdata.load(tagged_demo["tags"])
    assert table.embeddings.shape == (TAGGED_DEMO_TRACKS, 200)
    for row in (0, 17, 123):
        track_id = table.track_ids[row]
        results = similar.similar_tracks(tagged_demo["tags"], track_id, k=10)
        expected, cosine = numpy_neighbours(table.embeddings, row, 10)
        assert [r["track_id"] for r in results] == [table.track_ids[i] for i in expected]
        np.testing.assert_allclose([r["similarity"] for r in results], cosine, atol=2e-6)
        assert track_id not in {r["track_id"] for r in results}
        for r in results:  # shared tags are among the top 5 of both tracks
            other = table.row(r["track_id"])

            def top(i):
                return {table.tags[j] for j in np.argsort(-table.scores[i])[:5]}

            assert set(r["shared_tags"]) == top(row) & top(other)
    with pytest.raises(TagscaleError, match="unknown track 'nope'"):
        similar.similar_tracks(tagged_demo["tags"], "nope")


@pytest.mark.slow
def test_similar_cli_json_and_audio_file(tagged_demo, capsys):
    assert cli(["similar", "--tags", tagged_demo["tags"], "demo-00003", "--k", "3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 3 and all({"track_id", "similarity"} <= set(r) for r in results)
    assert [r["similarity"] for r in results] == sorted((r["similarity"] for r in results), reverse=True)
    # A catalog file embedded on its own lands on its own row: same decoder, patches and model.
    uri = next(row["uri"] for row in csv.DictReader(open(tagged_demo["catalog"])) if row["track_id"] == "demo-00003")
    assert (
        cli(
            [
                "similar",
                "--tags",
                tagged_demo["tags"],
                "--audio",
                uri,
                "--k",
                "2",
                "--json",
                "--cache-dir",
                tagged_demo["cache"],
            ]
        )
        == 0
    )
    nearest = json.loads(capsys.readouterr().out)[0]
    assert nearest["track_id"] == "demo-00003" and nearest["similarity"] > 0.99999
    assert cli(["similar", "--tags", tagged_demo["tags"], "nope"]) == 2
    assert "unknown track 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_index_recall_and_staleness(tagged_demo, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(pathlib.Path(tagged_demo["tags"]) / "tags", folder / "tags")
    assert cli(["index", "--tags", str(folder)]) == 0
    assert "recall@10 vs exact search = " in capsys.readouterr().out
    info = json.loads((folder / "index" / "similar.json").read_text())
    assert info["tracks"] == TAGGED_DEMO_TRACKS and info["recall_at_10"] >= 0.99
    table = tagdata.load(str(folder))
    index, note = similar.read_index(str(folder), TAGGED_DEMO_TRACKS)
    assert index is not None and note is None
    hits = 0
    for row in range(0, TAGGED_DEMO_TRACKS, 10):
        with_index = [r["track_id"] for r in similar.similar_tracks(str(folder), table.track_ids[row], k=10)]
        exact, _ = numpy_neighbours(table.embeddings, row, 10)
        assert table.track_ids[row] not in with_index
        hits += len(set(with_index) & {table.track_ids[i] for i in exact})
    assert hits / (10 * TAGGED_DEMO_TRACKS // 10) >= 0.99
    # A coarse index (4 of 16 lists scanned) misses neighbours; the recall it reports is the true one.
    info = similar.write_index(str(folder), nlist=16, nprobe=4)
    index, _ = similar.read_index(str(folder), TAGGED_DEMO_TRACKS)
    _, found = index.search(tagdata.normalized(table.embeddings), 11)
    true_hits = sum(
        len(set(found[row].tolist()) - {row} & set(numpy_neighbours(table.embeddings, row, 10)[0].tolist()))
        for row in range(TAGGED_DEMO_TRACKS)
    )
    assert (
        info["recall_at_10"] == pytest.approx(true_hits / (10 * TAGGED_DEMO_TRACKS), abs=1e-4)
        and 0.3 < info["recall_at_10"] < 1.0
    )
    # New tag output makes the index stale: similar searches exactly and says why.
    rows = pq.read_table(next((folder / "tags").glob("*.parquet"))).slice(0, 1).to_pylist()
    copied, rows[0]["track_id"] = rows[0]["track_id"], "extra-0"
    pq.write_table(pyarrow.Table.from_pylist(rows, schema=TAGS_SCHEMA), folder / "tags" / "run-z.parquet")
    listed = [path.rsplit("/", 1)[-1] for path in manifest.tag_files(str(folder))]
    manifest.write_tags_manifest(
        str(folder / "tags"), listed + ["run-z.parquet"], run_id="z"
    )  # as an incremental run would
    results, note = similar.search(str(folder), track_id="extra-0", k=2)
    assert "older than the tag output" in note
    assert results[0]["track_id"] == copied and results[0]["similarity"] == pytest.approx(1.0, abs=1e-6)


def test_similar_on_a_small_run_and_a_missing_one(tmp_path, capsys):
    run = small_run(tmp_path / "run", [{"a": 0.9}, {"a": 0.1}, {"a": 0.5}], [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert cli(["similar", "--tags", str(tmp_path / "none"), "t0"]) == 2
    assert "no tag output" in capsys.readouterr().err
    # Three tracks: t2 sits between t0 and t1, so it is the nearest of both.
    assert [r["track_id"] for r in similar.similar_tracks(run, "t0", k=2)] == ["t2", "t1"]


def test_index_replaces_only_its_own_folder(tmp_path, capsys):
    run = small_run(tmp_path / "run", [{"a": 0.1 * i} for i in range(30)], np.eye(30, 4).tolist())
    (tmp_path / "run" / "index").mkdir()
    (tmp_path / "run" / "index" / "similar.json").write_text("my notes")
    assert cli(["index", "--tags", run]) == 2
    assert capsys.readouterr().err.strip() == (
        f"tagscale index: error: the index folder {run}/index holds files tagscale did not write (similar.json); "
        "choose a new or empty directory"
    )
    assert (tmp_path / "run" / "index" / "similar.json").read_text() == "my notes"
    shutil.rmtree(tmp_path / "run" / "index")
    for _ in range(2):  # the index folder is tagscale's once it made it
        assert cli(["index", "--tags", run + "/"]) == 0
    assert similar.read_index(run, 30)[0] is not None


@pytest.mark.slow
def test_on_the_real_clips(real_clips, pretrained_cache, tmp_path, capsys):
    """The real recordings: similar, calibrate on their weak labels, and diff of two settings."""
    catalog = tmp_path / "real.csv"
    catalog.write_text("track_id,uri\n" + "".join(f"{p.stem.strip('_')[:24]},{p}\n" for p in real_clips))
    full = run_tag(catalog, tmp_path / "full", pretrained_cache, "--max-duration", "15")
    short = run_tag(
        catalog, tmp_path / "short", pretrained_cache, "--max-duration", "15", "--max-patches-per-track", "1"
    )
    table = tagdata.load(full)
    assert len(table.track_ids) == len(real_clips)
    for row, track_id in enumerate(table.track_ids):
        results = similar.similar_tracks(full, track_id, k=4)
        expected, cosine = numpy_neighbours(table.embeddings, row, 4)
        assert [r["track_id"] for r in results] == [table.track_ids[i] for i in expected]
        np.testing.assert_allclose([r["similarity"] for r in results], cosine, atol=2e-6)
    # Weak labels of the clips, 'category:value' -> value ('vocals:yes' -> vocals), as calibrate reads them.
    labels = tmp_path / "labels.csv"
    names = {p.name: p.stem.strip("_")[:24] for p in real_clips}
    with open(labels, "w") as handle:
        handle.write("track_id,tag\n")
        for row in csv.DictReader(open(real_clips[0].parents[1] / "labels.csv")):
            for label in row["tags"].split(";"):
                value = label.split(":")[-1]
                handle.write(
                    f"{names[pathlib.Path(row['path']).name]},{'vocals' if label == 'vocals:yes' else value}\n"
                )
    document = calibrate.calibrate(
        table, label_store.read_labels(str(labels)), target=0.8, min_positives=2, min_negatives=2
    )
    assert "classical" in document["tags"] and "techno" in document["insufficient_labels"]
    y = np.array(
        [
            t
            in {
                names[pathlib.Path(r["path"]).name]
                for r in csv.DictReader(open(real_clips[0].parents[1] / "labels.csv"))
                if "classical" in r["tags"]
            }
            for t in table.track_ids
        ]
    )
    chosen = table.scores[:, table.tags.index("classical")] >= document["tags"]["classical"]["threshold"]
    assert y[chosen].mean() >= 0.8
    assert cli(["diff", "--tags", full, "--tags", full, "--output", str(tmp_path / "same")]) == 0
    assert cli(["diff", "--tags", full, "--tags", short, "--output", str(tmp_path / "drift")]) == 1
    out = capsys.readouterr().out
    assert f"changed: {len(real_clips)} tracks in both runs" in out
    result = drift.compare(table, tagdata.load(short))
    # Clips shorter than two patches give the same output either way; longer ones move.
    long_clips = [i for i, n in enumerate(table.n_patches) if n > 1]
    assert all(result["cosine_shift"][i] > 1e-4 for i in long_clips)
    assert all(result["cosine_shift"][i] < 1e-6 for i, n in enumerate(table.n_patches) if n == 1)
