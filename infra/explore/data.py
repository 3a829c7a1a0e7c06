"""The explorer's data: tag runs read once (through :class:`runfolder.reader.TagRun`, local or
gs://, nothing copied to disk) into one score column per tag, queried with DuckDB.

DuckDB straight over the tag Parquet unnests every (tag, score) pair of every track on each
query: 6.8 s for one tag's top 20 on 1M tracks x 50 tags. So each run is read once at startup
into an Arrow table with one float column per tag (``s0``, ``s1``... in vocabulary order) and
registered with DuckDB; a browse query then scans one column (BENCHMARKS.md, "Explorer queries").
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os

import numpy as np
import pyarrow
import pyarrow.compute as pc

from pipelines.storage import fileio
from runfolder import reader, segments
from runfolder.schema import TAGS_SCHEMA
from runtime.machine import usable_cores
from tagruns import tagdata

META_COLUMNS = ["track_id", "uri", "duration_s", "n_patches", "model"]
HISTOGRAM_BINS = 20  # score histograms: 20 bins of 0.05 over [0, 1]
# One reason per kind of failure: paths and numbers differ from track to track, the kind does not.
REASON_SQL = (
    "regexp_replace(regexp_replace(left(split_part(error, chr(10), 1), 200), "
    "'\\S*[/\\\\]\\S*', '...', 'g'), '[0-9]+', 'N', 'g')"
)


@dataclasses.dataclass
class Run:
    """One tag run (one ``--tags DIR``) held in memory."""

    index: int
    name: str
    source: str  # the DIR as given on the command line (local or gs://)
    run: reader.TagRun  # the run's one reader: segments and dead letters are read through it
    tags: list[str]  # column ``s{k}`` of :attr:`table` holds the scores of ``tags[k]``
    table: pyarrow.Table  # row, track_id, uri, duration_s, n_patches, model_name, model_version, search, s0.., r0..
    thresholds: dict[str, float]

    @property
    def segment_files(self) -> list[str] | None:
        """The run's segments table (:mod:`runfolder.segments`); None without one."""
        return self.run.segment_files

    @property
    def view(self) -> str:
        return f"run{self.index}"

    def column(self, tag: str) -> str:
        return f"s{self.tags.index(tag)}"

    def rank_column(self, tag: str) -> str:
        return f"r{self.tags.index(tag)}"


def ranks(values: np.ndarray) -> np.ndarray:
    """Each track's place in a tag's order: score descending, then row; missing (NaN) last.

    With it a page of one run is a range of ranks, so no request sorts. Scores and rows pack
    into one uint64 key (order-preserving float bits, inverted for descending, above the row),
    which sorts twice as fast as a stable argsort of the scores."""
    bits = (values + np.float32(0)).view(np.uint32).astype(np.uint64)  # + 0 folds -0.0 into 0.0
    ascending = np.where(bits & 0x80000000, ~bits & 0xFFFFFFFF, bits | 0x80000000)
    ascending[np.isnan(values)] = 0
    key = ((0xFFFFFFFF - ascending) << np.uint64(32)) | np.arange(len(values), dtype=np.uint64)
    order = (np.sort(key) & 0xFFFFFFFF).astype(np.int64)
    rank = np.empty(len(values), dtype=np.int32)
    rank[order] = np.arange(len(values), dtype=np.int32)
    return rank


def read_run(index: int, source: str) -> Run:
    """Read a run (local or gs://, through its one reader, by its rule) into a :class:`Run`
    (one Arrow column per tag), a row group at a time: the scores' tag names are read
    dictionary-encoded and scattered straight into one float column per tag."""
    run = reader.TagRun(source)
    matrix = tagdata.ScoreMatrix(run.num_rows())
    # A run where every track failed still has its (empty) files: it shows its dead letters.
    metadata, row = [TAGS_SCHEMA.empty_table().select(META_COLUMNS)], 0
    for part in run.batches(META_COLUMNS + ["scores"], dictionary_tags=True):
        matrix.add(row, part.column("scores").combine_chunks())
        metadata.append(part.drop_columns(["scores"]))
        row += part.num_rows
    meta = pyarrow.concat_tables(metadata, promote_options="permissive")
    model = meta.column("model").combine_chunks()
    columns = {
        "row": pyarrow.array(np.arange(row, dtype=np.int32)),
        "track_id": meta.column("track_id"),
        "uri": meta.column("uri"),
        "duration_s": meta.column("duration_s"),
        "n_patches": meta.column("n_patches"),
        "model_name": model.field("name"),
        "model_version": model.field("version"),
    }
    # What the Browse search matches: id and URI, lower-cased once here rather than per query.
    columns["search"] = pc.utf8_lower(pc.binary_join_element_wise(meta.column("track_id"), meta.column("uri"), "\x1f"))
    for tag, k in matrix.tags.items():
        values = matrix.values[:, k]
        missing = np.isnan(values)
        # NULL, not NaN, for a tag a track lacks: DuckDB sorts NaN above every score.
        columns[f"s{k}"] = pyarrow.array(values, mask=missing if missing.any() else None)
    # numpy sorts release the GIL: one thread per core ranks the tags side by side.
    with concurrent.futures.ThreadPoolExecutor(max_workers=usable_cores()) as pool:
        for k, rank in zip(matrix.tags.values(), pool.map(ranks, (matrix.values[:, k] for k in matrix.tags.values()))):
            columns[f"r{k}"] = rank
    name = os.path.basename(source.rstrip("/")) or source
    table = pyarrow.table(columns)
    return Run(index, name, source, run, list(matrix.tags), table, {})


def track_segments(run: Run, track_id: str) -> dict | None:
    """A track's segment rows in ``run``: ``{"tags", "segments": [{"start_s", "end_s", "scores"}]}``,
    scores in the order of ``tags``; None when the run has no segments table or not the track.
    Reads only the shard(s) the track_id hashes to."""
    if not run.segment_files:
        return None
    table = run.run.read_segments(segments.files_for_track(run.segment_files, track_id), track_id)
    if table is None or not table.num_rows:
        return None
    tags, found = segments.vocabulary(table.schema), table.to_pylist()
    if not found:
        return None
    found.sort(key=lambda row: row["start_s"])
    tags = tags or [item["tag"] for item in found[0]["scores"]]
    return {
        "run": run.name,
        "tags": tags,
        "segments": [
            {"start_s": row["start_s"], "end_s": row["end_s"], "scores": [item["score"] for item in row["scores"]]}
            for row in found
        ],
    }


def apply_thresholds(runs: list[Run], path: str) -> None:
    """Give each run the calibrated thresholds of its model (all runs when the file names none)."""
    from tagruns.calibrate import load_thresholds

    thresholds = load_thresholds(path)
    try:
        model = json.loads(fileio.read_text(path)).get("model") or {}
    except (OSError, ValueError, AttributeError):
        model = {}
    for run in runs:
        names = set(
            zip(run.table.column("model_name").to_pylist()[:1], run.table.column("model_version").to_pylist()[:1])
        )
        if model.get("name") and (model.get("name"), str(model.get("version"))) not in {(n, str(v)) for n, v in names}:
            continue
        run.thresholds = {tag: value for tag, value in thresholds.items() if tag in run.tags}


def dead_letters(connection, run: Run) -> list[dict]:
    """The run's dead-letter records counted by stage and reason.

    pyarrow reads the files and DuckDB counts the registered table: no path goes into SQL."""
    table = run.run.dead_letters(["stage", "error"])
    if table is None:
        return []
    name = f"dead_letter_{run.index}"
    connection.register(name, table)
    try:
        rows = connection.execute(
            f"SELECT stage, {REASON_SQL} AS reason, count(*) AS n FROM {name} "
            "GROUP BY ALL ORDER BY n DESC, stage, reason"
        ).fetchall()
    finally:
        connection.unregister(name)
    return [{"run": run.name, "stage": stage, "reason": reason, "count": n} for stage, reason, n in rows]


def tag_stats(run: Run) -> list[dict]:
    """Per tag: tracks above 0.5, above the calibrated threshold, and a 20-bin score histogram."""
    out = []
    for k, tag in enumerate(run.tags):
        values = run.table.column(f"s{k}").to_numpy(zero_copy_only=False)
        values = values[~np.isnan(values)]
        bins = np.clip((values * HISTOGRAM_BINS).astype(np.int64), 0, HISTOGRAM_BINS - 1)
        threshold = run.thresholds.get(tag)
        out.append(
            {
                "tag": tag,
                "tracks_above_0_5": int((values > 0.5).sum()),
                "threshold": threshold,
                "tracks_above_threshold": None if threshold is None else int((values >= threshold).sum()),
                "histogram": np.bincount(bins, minlength=HISTOGRAM_BINS).tolist(),
            }
        )
    return sorted(out, key=lambda entry: (-entry["tracks_above_0_5"], entry["tag"]))
