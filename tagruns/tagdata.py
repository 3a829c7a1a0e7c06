"""Tag output as arrays: what similar, probe, calibrate and diff compute on.

Reads only the tag Parquet files (``DIR/tags/*.parquet``, local or gs://, listed by
:func:`pipelines.manifest.tag_files`), never audio. One row per track: a track tagged by several
runs in the same folder (``--incremental`` with a new model version) keeps its row from the
last file, the newest run.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow
import pyarrow.compute as pc

from runfolder import reader
from runtime.errors import TagscaleError


@dataclasses.dataclass
class TagTable:
    """The tag output of one run folder, as arrays.

    Attributes
    ----------
    track_ids : list[str]
    uris : list[str]
    model : dict
        ``{"name", "version"}`` of the model that wrote the rows.
    tags : list[str]
        The vocabulary, in the column order of ``scores``.
    scores : np.ndarray, shape (n_tracks, n_tags), float32
    embeddings : np.ndarray, shape (n_tracks, dim), float32
    durations : np.ndarray, shape (n_tracks,)
    n_patches : np.ndarray, shape (n_tracks,)
    """

    track_ids: list[str]
    uris: list[str]
    model: dict
    tags: list[str]
    scores: np.ndarray
    embeddings: np.ndarray
    durations: np.ndarray
    n_patches: np.ndarray

    def row(self, track_id: str) -> int:
        """Row index of ``track_id``; :class:`TagscaleError` when the run has no such track."""
        if not hasattr(self, "_rows"):
            self._rows = {track_id: index for index, track_id in enumerate(self.track_ids)}
        if track_id not in self._rows:
            raise TagscaleError(f"unknown track {track_id!r}: not in the tag output")
        return self._rows[track_id]


def _list_matrix(column: pyarrow.ChunkedArray, width: int | None, what: str) -> np.ndarray:
    """A list<float> column of equal-length lists as an (n, width) float32 matrix."""
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    width = int(lengths[0]) if width is None and len(lengths) else width or 0
    if len(lengths) and (lengths != width).any():
        raise TagscaleError(
            f"tag output mixes {what} of different lengths ({sorted(set(lengths.tolist()))[:4]}): one model per folder"
        )
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(lengths), width)


class ScoreMatrix:
    """Tag output's ``scores`` column as a float32 matrix (tracks x tags), filled a batch at a time.

    Each batch's (row, tag, score) triples are scattered into a column-major matrix that grows a
    column for each tag not seen before (:attr:`tags` maps a tag to its column); a tag a track
    lacks stays NaN. Tag strings are matched once per distinct tag, not once per score, so a
    dictionary-encoded column (``read_dictionary``) is read without decoding it."""

    def __init__(self, rows: int):
        self.tags: dict[str, int] = {}
        self.values = np.full((rows, 64), np.nan, dtype=np.float32, order="F")

    def add(self, first_row: int, scores: pyarrow.ListArray) -> None:
        """Scatter ``scores`` (one list per track) into rows ``first_row`` onwards."""
        entries = scores.flatten()
        tags, values = entries.field("tag"), entries.field("score").to_numpy(zero_copy_only=False)
        if not pyarrow.types.is_dictionary(tags.type):
            tags = pc.dictionary_encode(tags)
        local_to_global = np.array(
            [self.tags.setdefault(tag, len(self.tags)) for tag in tags.dictionary.to_pylist()], dtype=np.int64
        )
        if len(self.tags) > self.values.shape[1]:
            grown = np.full((self.values.shape[0], 2 * len(self.tags)), np.nan, dtype=np.float32, order="F")
            grown[:, : self.values.shape[1]] = self.values
            self.values = grown
        lengths = pc.fill_null(pc.list_value_length(scores), 0).to_numpy(zero_copy_only=False)
        rows = np.repeat(np.arange(first_row, first_row + len(scores)), lengths)
        self.values[rows, local_to_global[tags.indices.to_numpy(zero_copy_only=False)]] = values


def load(tags_dir: str) -> TagTable:
    """Read a run folder's tag output into a :class:`TagTable`.

    Raises
    ------
    TagscaleError
        When the folder holds no tag output, rows that do not come from one vocabulary, or
        files that are not tag Parquet (another schema, not Parquet at all, unreadable).
    """
    try:
        return _load(tags_dir)
    except (pyarrow.ArrowException, KeyError, TypeError, ValueError, OSError) as error:
        # What a damaged or foreign file in tags/ raises: the user's to fix, so one line.
        raise TagscaleError(f"cannot read the tag output in {tags_dir}: {str(error).splitlines()[0]}") from error


def _load(tags_dir: str) -> TagTable:
    run = reader.TagRun(tags_dir)  # the one rule: listed files, one model, one row per track
    table = run.table()
    ids = table.column("track_id").to_pylist()
    if not ids:
        raise TagscaleError(f"the tag output in {tags_dir} has no rows")
    scores = table.column("scores").combine_chunks()
    flat = pc.list_flatten(scores)
    tag_names = flat.field("tag")
    vocabulary = sorted(pc.unique(tag_names).to_pylist())
    width = len(vocabulary)
    lengths = pc.list_value_length(scores).to_numpy(zero_copy_only=False)
    if (lengths != width).any():
        raise TagscaleError(
            f"tag output in {tags_dir} mixes vocabularies (tracks with {sorted(set(lengths.tolist()))} of {width} tags)"
        )
    scattered = ScoreMatrix(len(ids))
    scattered.add(0, scores)
    matrix = np.ascontiguousarray(scattered.values[:, [scattered.tags[tag] for tag in vocabulary]])
    return TagTable(
        track_ids=ids,
        uris=table.column("uri").to_pylist(),
        model=run.model,
        tags=vocabulary,
        scores=matrix,
        embeddings=_list_matrix(table.column("embedding"), None, "embeddings"),
        durations=table.column("duration_s").to_numpy(),
        n_patches=table.column("n_patches").to_numpy(),
    )


def normalized(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero), so a dot product is the cosine."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return (embeddings / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def label_matrix(table: TagTable, labels: dict[str, set[str]], tags: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``table`` that are labelled, and their 0/1 matrix over ``tags``.

    Returns
    -------
    rows : np.ndarray of int, the labelled tracks' rows in ``table``
    y : np.ndarray, shape (len(rows), len(tags)), int8
    """
    known = {track_id: index for index, track_id in enumerate(table.track_ids)}
    labelled = [track_id for track_id in labels if track_id in known]
    if not labelled:
        raise TagscaleError(f"none of the {len(labels)} labelled tracks is in the tag output")
    rows = np.array([known[track_id] for track_id in labelled], dtype=np.int64)
    y = np.array([[tag in labels[track_id] for tag in tags] for track_id in labelled], dtype=np.int8).reshape(
        len(rows), len(tags)
    )
    return rows, y
