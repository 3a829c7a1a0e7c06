"""The catalog reader's duplicates and fusion break, in memory that does not grow with the rows.

One worker streams the catalog (:func:`pipelines.catalog.parse_rows`). A repeated track_id is
caught there, as it is read, against the ids seen so far (the ids alone: about 120 bytes a
row), and becomes a dead letter; the first row is kept. The tracks then cross a grouping so that
decoding spreads over all workers (without it the runner fuses every decode into the reader's
one worker) -- in chunks of up to :data:`CHUNK_ROWS` tracks, each one compressed pickle: Beam's
local runner holds every element that crosses a grouping in memory, and a chunk holds 10 to
70 bytes a row (as well as the paths compress) where a grouped ``Track`` held about 800.
"""

from __future__ import annotations

import pickle
import zlib

import apache_beam as beam

from pipelines import dead_letter

CHUNK_ROWS = 64  # tracks per chunk at most; the first rows go one a chunk (see chunk_rows)


def chunk_rows(rows_read: int) -> int:
    """How many tracks the next chunk takes after ``rows_read``: one each for the first 256, so
    a small catalog of long tracks still spreads one track per worker, then more and more."""
    return min(CHUNK_ROWS, 1 + rows_read // 256)


def first_rows(parsed):
    """``parse_rows``' output with each repeated track_id's later rows turned into dead letters
    (in catalog order): ``(row, Track)`` for the first row of each id, dead letters as they are."""
    seen: dict[str, int] = {}  # track_id -> its first row
    for item in parsed:
        if isinstance(item, beam.pvalue.TaggedOutput):
            yield item
            continue
        track_id, (number, track) = item
        first_row = seen.setdefault(track_id, number)
        if first_row == number:
            yield number, track
            continue
        yield beam.pvalue.TaggedOutput(
            dead_letter.TAG,
            dead_letter.record(
                track_id=track_id,
                uri=track.uri,
                stage="catalog",
                error=f"duplicate track_id: row {number} repeats row {first_row} (the first row is kept)",
            ),
        )


def _packed(chunk: list[tuple]) -> bytes:
    # Compressed: the ids and paths of a catalog repeat a lot (9x smaller for ids numbered in one
    # folder, at about 1 us a row).
    return zlib.compress(pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL), 1)


def chunks(parsed):
    """``parse_rows``' output -> ``(chunk number, pickled tracks)`` for the unique tracks, in
    catalog order, and the dead letters (bad rows and repeated ids) in catalog order."""
    chunk: list[tuple] = []
    count = rows = 0
    for item in first_rows(parsed):
        if isinstance(item, beam.pvalue.TaggedOutput):
            yield item
            continue
        _, track = item
        chunk.append((track.track_id, track.uri, track.tags, track.split))
        rows += 1
        if len(chunk) >= chunk_rows(rows - len(chunk)):
            yield count, _packed(chunk)
            chunk, count = [], count + 1
    if chunk:
        yield count, _packed(chunk)


def unpacked(blob: bytes) -> list[tuple]:
    """A chunk's ``(track_id, uri, tags, split)`` tuples, in catalog order."""
    return pickle.loads(zlib.decompress(blob))
