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
    import pyarrow.parquet as pq

    files = query.tag_files(tags_dir)
    if not files:
        raise TagscaleError(f"no tag output in {tags_dir}")
    table = pq.read_table(files, columns=["track_id", "embedding", "scores"]) if len(files) > 1 else pq.read_table(files[0], columns=["track_id", "embedding", "scores"])
    ids = table.column("track_id").to_pylist()
    if track_id not in ids:
        raise TagscaleError(f"unknown track {track_id!r}: not in the tag output")
    embeddings = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    norms = np.linalg.norm(embeddings, axis=1)
    norms[norms == 0] = 1.0
    unit = embeddings / norms[:, None]
    index = ids.index(track_id)
    similarity = unit @ unit[index]
    similarity[index] = -np.inf
    order = np.argsort(-similarity, kind="stable")[: max(k, 0)]
    scores = table.column("scores").to_pylist()

    def above(row: int) -> set[str]:
        return {entry["tag"] for entry in scores[row] if entry["score"] > 0.5}

    mine = above(index)
    return [
        {"track_id": ids[row], "similarity": float(similarity[row]), "shared_tags": sorted(mine & above(row))}
        for row in order
        if np.isfinite(similarity[row])
    ]
