"""Tags in time: a track's per-patch scores as rows of a ``segments`` table beside the track table.

``tagscale tag --segments`` writes, besides each track's row of mean scores, one row per patch
(schema :data:`SCHEMA`): track_id, start_s, end_s and scores, the patch's {tag, score} pairs in
the model's vocabulary order (the same order in every row, so the k-th pair is always the k-th
tag; the track table's scores are sorted by score instead). The vocabulary is also in each
file's Parquet key-value metadata (:data:`VOCABULARY_KEY`), so a reader can name one column per
tag without reading a row. The files sit in ``DIR/tags/`` next to the track table's, named
``segments-run-...``, and ``tags/manifest.json`` lists them under ``segments``
(:data:`runfolder.layout.SEGMENTS_KEY`).

Patch ``k`` of a track holds frames ``[187 k, 187 (k + 1))`` of its centred STFT
(:func:`model.dsp.patch_waveform`), that is the audio from ``k * PATCH_SECONDS`` to
``(k + 1) * PATCH_SECONDS``; the last one ends at the track's end (a short track's single,
zero-padded patch too). Nothing here runs Beam, so query and the explorer read with it.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow

from model import dsp
from runfolder import layout
from runtime.errors import TagscaleError

VOCABULARY_KEY = "tagscale.tags"
SCHEMA = pyarrow.schema(
    [
        ("track_id", pyarrow.string()),
        ("start_s", pyarrow.float64()),
        ("end_s", pyarrow.float64()),
        ("scores", pyarrow.list_(pyarrow.struct([("tag", pyarrow.string()), ("score", pyarrow.float32())]))),
    ]
)
SHARD_NAME = re.compile(r"(.+)-([0-9]{5})-of-([0-9]{5})\.parquet")
# Two patches touch when one's end is the next one's start: both are rounded the same way.
TOUCH_S = 1e-6


def schema_for(tags: list[str]) -> pyarrow.Schema:
    """:data:`SCHEMA` carrying the model's vocabulary (the order of every row's scores)."""
    return SCHEMA.with_metadata({VOCABULARY_KEY: json.dumps(list(tags))})


def vocabulary(schema: pyarrow.Schema) -> list[str] | None:
    """The vocabulary a segment file's schema carries; None when it has none."""
    raw = (schema.metadata or {}).get(VOCABULARY_KEY.encode())
    return None if raw is None else list(json.loads(raw))


def span(index: int, duration_s: float) -> tuple[float, float]:
    """``(start_s, end_s)`` of patch ``index`` of a track of ``duration_s`` seconds, to the ms
    (like the track table's duration_s); the end never past the track's end."""
    start = round(index * dsp.PATCH_HOP_SAMPLES / dsp.SAMPLE_RATE, 3)
    end = round((index + 1) * dsp.PATCH_HOP_SAMPLES / dsp.SAMPLE_RATE, 3)
    return start, min(end, round(float(duration_s), 3))


def segment_rows(track_id: str, patches, *, tags: list[str], duration_s: float) -> list[dict]:
    """One row per patch: ``patches`` are ``(index, scores)`` pairs of one track, any order."""
    rows = []
    for index, scores in sorted(patches, key=lambda item: item[0]):
        start, end = span(index, duration_s)
        values = np.asarray(scores, np.float32)
        rows.append(
            {
                "track_id": track_id,
                "start_s": start,
                "end_s": end,
                "scores": [{"tag": tag, "score": float(value)} for tag, value in zip(tags, values)],
            }
        )
    return rows


def row_bytes(row: dict) -> int:
    """About the bytes a segment row takes in an uncompressed file (see runfolder.schema.row_bytes)."""
    return 5 * len(row["scores"]) + len(row["track_id"]) + 16 + 24


def view_sql(tags: list[str], source: str = "segment_rows") -> str:
    """SQL of the ``segments`` view over ``source``: track_id, start_s, end_s, one score column per tag."""
    columns = "".join(
        f',\n  scores[{k + 1}].score::DOUBLE AS "{tag.replace(chr(34), chr(34) * 2)}"' for k, tag in enumerate(tags)
    )
    return f"CREATE VIEW segments AS SELECT track_id, start_s, end_s{columns}\nFROM {source};"


def ranges(rows, threshold: float) -> list[dict]:
    """Merge ``(start_s, end_s, score)`` rows (in time order) where the score is at or above
    ``threshold`` into ``[{"start_s", "end_s", "max_score"}]``. Compared in float32, as the
    scores are stored, so a threshold of 0.7 keeps a score stored as 0.7."""
    limit = np.float32(threshold)
    merged = []
    for start, end, score in rows:
        if score is None or not np.float32(score) >= limit:
            continue
        if merged and start <= merged[-1]["end_s"] + TOUCH_S:
            merged[-1]["end_s"] = max(merged[-1]["end_s"], end)
            merged[-1]["max_score"] = max(merged[-1]["max_score"], float(score))
        else:
            merged.append({"start_s": float(start), "end_s": float(end), "max_score": float(score)})
    for entry in merged:
        entry["max_score"] = round(entry["max_score"], 4)
    return merged


def format_ranges(found: list[dict]) -> str:
    """One range per line: ``start-end s  max score``."""
    return "\n".join(f"{entry['start_s']:.3f}-{entry['end_s']:.3f} s  max {entry['max_score']:.4f}" for entry in found)


def files_for_track(files: list[str], track_id: str) -> list[str]:
    """The segment files that can hold ``track_id``: per write (file name prefix), the shard its
    track_id hashes to (:func:`runfolder.layout.shard_of`, where the writer placed it)."""
    wanted = []
    for path in files:
        found = SHARD_NAME.fullmatch(path.rsplit("/", 1)[-1])
        if found is None:
            raise TagscaleError(f"{path} is not a segment shard ({SHARD_NAME.pattern})")
        if int(found.group(2)) == layout.shard_of(track_id, int(found.group(3))):
            wanted.append(path)
    return wanted
