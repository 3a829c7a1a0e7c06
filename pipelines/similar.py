"""similar: the tracks whose embeddings are closest to a given track's (cosine similarity)."""
from __future__ import annotations

import numpy as np

from model.errors import TagscaleError
from pipelines import query


def similar_tracks(tags_dir: str, track_id: str, k: int = 10) -> list[dict]:
    """The ``k`` tracks of a tag run most similar to ``track_id``, highest similarity first.

    Returns
    -------
    list of dict
        ``{"track_id", "similarity", "shared_tags"}``; shared tags are the tags scoring above 0.5
        for both tracks. The track itself is excluded.

    Raises
    ------
    TagscaleError
        When ``track_id`` is not in the run.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = query.tag_files(tags_dir)
    if not files:
        raise TagscaleError(f"no tag output in {tags_dir}")
    table = pq.read_table(files, columns=["track_id", "embedding"]).combine_chunks()
    matches = pc.index(table.column("track_id"), track_id).as_py()
    if matches < 0:
        raise TagscaleError(f"unknown track {track_id!r}: not in the tag output")
    embedding = table.column("embedding").chunk(0)
    embeddings = embedding.flatten().to_numpy().reshape(len(table), -1).astype(np.float32, copy=False)
    norms = np.linalg.norm(embeddings, axis=1)
    norms[norms == 0] = 1.0
    similarity = (embeddings @ (embeddings[matches] / norms[matches])) / norms
    similarity[matches] = -np.inf
    k = min(max(k, 0), len(similarity) - 1)
    nearest = np.argpartition(-similarity, k - 1)[:k] if k else np.array([], dtype=np.int64)
    nearest = nearest[np.lexsort((nearest, -similarity[nearest]))]
    scores = pq.read_table(files, columns=["scores"]).column("scores")
    wanted = [int(matches)] + nearest.tolist()
    picked = scores.take(wanted).to_pylist()
    above = [{entry["tag"] for entry in row if entry["score"] > 0.5} for row in picked]
    ids = table.column("track_id")
    return [
        {"track_id": ids[int(row)].as_py(), "similarity": float(similarity[row]), "shared_tags": sorted(above[0] & above[i + 1])}
        for i, row in enumerate(nearest)
    ]
