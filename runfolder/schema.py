"""The track table: one row per track (:data:`TAGS_SCHEMA`), and the one builder of its rows.

Imports pyarrow and numpy only (no Beam, no TensorFlow), so every reader can take the schema.
"""

from __future__ import annotations

import numpy as np
import pyarrow

TAGS_SCHEMA = pyarrow.schema(
    [
        ("track_id", pyarrow.string()),
        ("uri", pyarrow.string()),
        ("model", pyarrow.struct([("name", pyarrow.string()), ("version", pyarrow.string())])),
        ("duration_s", pyarrow.float64()),
        ("n_patches", pyarrow.int32()),
        ("scores", pyarrow.list_(pyarrow.struct([("tag", pyarrow.string()), ("score", pyarrow.float32())]))),
        ("embedding", pyarrow.list_(pyarrow.float32())),
    ]
)


def tag_row(
    *,
    track_id: str,
    uri: str,
    model_name: str,
    model_version: str,
    duration_s: float,
    n_patches: int,
    tags: list[str],
    scores,
    embedding,
) -> dict:
    """A track's row: ``scores`` (one per tag of ``tags``, in that order) stored as {tag, score}
    pairs sorted by score, highest first (ties in vocabulary order); the embedding as float32."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    return {
        "track_id": track_id,
        "uri": uri,
        "model": {"name": model_name, "version": model_version},
        "duration_s": round(float(duration_s), 3),
        "n_patches": int(n_patches),
        "scores": [{"tag": tags[i], "score": float(scores[i])} for i in order],
        "embedding": np.asarray(embedding).astype(np.float32).tolist(),
    }


def row_bytes(row: dict) -> int:
    """About the bytes a tag row takes in an uncompressed Parquet file: 4 per embedding value,
    about 5 per score (the value and its dictionary-encoded tag), the ids, a fixed part."""
    return 4 * len(row["embedding"]) + 5 * len(row["scores"]) + len(row["track_id"]) + len(row["uri"]) + 24
