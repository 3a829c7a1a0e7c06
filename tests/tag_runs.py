"""Small hand-made tag runs: tag Parquet in the pipeline's schema, written without running Beam."""

from __future__ import annotations

import pathlib

import pyarrow
import pyarrow.parquet as pq

from runfolder.schema import TAGS_SCHEMA


def small_run(folder: pathlib.Path, scores: list[dict], embeddings: list[list[float]]) -> str:
    """Write ``folder/tags/run-1.parquet``: track ``t{i}`` has ``scores[i]`` ({tag: score}) and
    ``embeddings[i]``, model m/v, 3 s, one patch. Returns the run folder."""

    rows = [
        {
            "track_id": f"t{i}",
            "uri": f"/a/t{i}.mp3",
            "model": {"name": "m", "version": "v"},
            "duration_s": 3.0,
            "n_patches": 1,
            "scores": sorted(({"tag": k, "score": v} for k, v in s.items()), key=lambda x: -x["score"]),
            "embedding": e,
        }
        for i, (s, e) in enumerate(zip(scores, embeddings))
    ]
    (folder / "tags").mkdir(parents=True)
    pq.write_table(pyarrow.Table.from_pylist(rows, schema=TAGS_SCHEMA), folder / "tags" / "run-1.parquet")
    return str(folder)


# The demo catalog tagged by musicnn-mtt: true tags known, 200 tracks (see the tagged_demo fixture).
TAGGED_DEMO_TRACKS = 200
NOT_IN_MUSICNN = ("bass", "bright", "dark")  # demo tags the MTT vocabulary lacks


def run_tag(catalog, output, cache, *extra) -> str:
    """``tag`` with musicnn-mtt from ``cache``; asserts no track failed. Returns the run folder."""
    from pipelines import tag

    summary = tag.run(
        ["--catalog", str(catalog), "--model", "musicnn-mtt", "--output", str(output), "--cache-dir", cache, *extra]
    )
    assert summary["failed"] == 0
    return str(output)


def make_tagged_demo(root: pathlib.Path, cache: str) -> dict:
    """A 3.5 s demo catalog of TAGGED_DEMO_TRACKS tracks (seed 0) tagged by musicnn-mtt (a Beam run).

    Returns ``{"root", "catalog", "truth": {track_id: set of true tags}, "tags": run folder, "cache"}``.
    """
    import csv

    from infra.demo.catalog import make_demo_catalog

    catalog = make_demo_catalog(str(root / "catalog"), n_tracks=TAGGED_DEMO_TRACKS, seed=0, duration_s=3.5)
    with open(catalog) as handle:
        truth = {row["track_id"]: set(row["tags"].split(";")) for row in csv.DictReader(handle)}
    tags_dir = run_tag(catalog, root / "run", cache)
    return {"root": root, "catalog": catalog, "truth": truth, "tags": tags_dir, "cache": cache}


def write_labels(path, truth: dict, track_ids) -> str:
    """A labels CSV (track_id,tag) with the true tags of ``track_ids``."""
    with open(path, "w") as handle:
        handle.write("track_id,tag\n")
        for track_id in track_ids:
            handle.writelines(f"{track_id},{t}\n" for t in sorted(truth[track_id]))
    return str(path)


def labelled_run(folder, *, nan_rows=()) -> list[str]:
    """20 tracks, tag a scoring high on the labelled positives; labels.csv beside the run.

    Returns the ``calibrate --tags RUN --labels FILE`` arguments; ``nan_rows`` get NaN scores."""
    import numpy as np

    rng = np.random.default_rng(0)
    positive = [i % 2 == 0 for i in range(20)]
    scores = [{"a": float("nan") if i in nan_rows else 0.6 + 0.3 * p} for i, p in enumerate(positive)]
    run = small_run(folder / "run", scores, rng.normal(size=(20, 4)).tolist())
    labels = folder / "labels.csv"
    labels.write_text("track_id,tag\n" + "".join(f"t{i},{'a' if p else 'z'}\n" for i, p in enumerate(positive)))
    return ["calibrate", "--tags", run, "--labels", str(labels)]
