"""The explorer's queries: browse, one track, similar tracks, summary, CSV export.

Every answer is plain JSON-ready data; :mod:`infra.explore.server` turns it into HTTP.
"""

from __future__ import annotations

import threading

from infra.explore import data as explore_data
from infra.explore.data import Run
from runtime.errors import TagscaleError

MAX_LIMIT = 500
MAX_OFFSET = 2**31 - 1  # rows and ranks are int32: no page starts further in
TOP_TAGS = 3  # tags shown next to each browse result


class BadRequest(ValueError):
    """A query parameter the API cannot answer (HTTP 400)."""


class Explorer:
    """One or more tag runs, queried with one DuckDB connection (DuckDB connections are not
    safe to share between threads, and each query takes milliseconds, so a lock serializes them)."""

    def __init__(self, runs: list[Run]):
        import duckdb

        self.runs = runs
        self._lock = threading.Lock()
        self._searchers = {}  # run directory -> tagruns.similar.Searcher, loaded on first use
        self._searchers_lock = threading.Lock()
        # The runs are registered Arrow tables: DuckDB itself opens no file, installs or loads
        # no extension, and the settings that say so cannot be changed by a query.
        self._db = duckdb.connect(
            config={
                "enable_external_access": False,
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "lock_configuration": True,
            }
        )
        for run in runs:
            self._db.register(run.view, run.table)
        self._stats = None
        self.stats()  # once, up front: no request waits for it

    @classmethod
    def open(cls, sources: list[str], thresholds: str | None = None) -> "Explorer":
        """Read every run (local or gs://) through its one reader; nothing is copied to disk."""
        runs = [explore_data.read_run(index, source) for index, source in enumerate(sources)]
        names = [run.name for run in runs]
        for run in runs:
            if names.count(run.name) > 1:  # two runs in folders of the same name
                run.name = f"{run.name}#{run.index + 1}"
        if thresholds:
            explore_data.apply_thresholds(runs, thresholds)
        return cls(runs)

    def close(self) -> None:
        self._db.close()

    def _query(self, sql: str, params: list) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # ------------------------------------------------------------------ browse

    def tags(self) -> list[dict]:
        """Every tag of every run: the runs that have it, tracks above 0.5 and the calibrated threshold."""
        out: dict[str, dict] = {}
        for run in self.runs:
            for entry in self.stats_for(run):
                tag = out.setdefault(
                    entry["tag"], {"tag": entry["tag"], "runs": [], "tracks_above_0_5": 0, "thresholds": {}}
                )
                tag["runs"].append(run.name)
                tag["tracks_above_0_5"] += entry["tracks_above_0_5"]
                if entry["threshold"] is not None:
                    tag["thresholds"][run.name] = entry["threshold"]
        return sorted(out.values(), key=lambda tag: (-tag["tracks_above_0_5"], tag["tag"]))

    def _filters(self, tag: str | None, minimum: str | float | None, search: str, run_name: str | None):
        """Per run the filter reaches: ``(run, [SQL conditions], [parameters])``."""
        runs = [run for run in self.runs if run_name in (None, "", run.name)]
        if run_name and not runs:
            raise BadRequest(f"unknown run {run_name!r}; the runs are: {', '.join(r.name for r in self.runs)}")
        if tag:
            runs = [run for run in runs if tag in run.tags]
            if not runs:
                raise BadRequest(f"unknown tag {tag!r}")
        filters = []
        for run in runs:
            where, values = [], []
            if tag:
                if minimum == "calibrated" and tag not in run.thresholds:
                    continue
                where.append(f"{run.column(tag)} >= ?")
                values.append(run.thresholds[tag] if minimum == "calibrated" else float(minimum or 0.0))
            if search:
                where.append("contains(search, ?)")
                values.append(search.lower())
            filters.append((run, where, values))
        if tag and minimum == "calibrated" and not filters:
            raise BadRequest(f"no calibrated threshold for tag {tag!r} (start with --thresholds FILE)")
        return filters

    def _matches(self, tag, minimum, search, run_name, limit=None, offset=0) -> tuple[list[tuple], int]:
        """``([(run index, row, score)], total)`` for one page (or everything when ``limit`` is None)."""
        filters = self._filters(tag, minimum, search, run_name)
        if not filters:
            return [], 0
        if limit is not None and tag and not search:
            return self._ranked_page(tag, filters, limit, offset)
        if limit is not None and not tag and not search:
            return self._run_order_page(filters, limit, offset)
        selects, params = [], []
        for run, where, values in filters:
            score = run.column(tag) if tag else "NULL::FLOAT"
            clause = f" WHERE {' AND '.join(where)}" if where else ""
            selects.append(f"SELECT {run.index} AS run, row, {score} AS score FROM {run.view}{clause}")
            params += values
        # Without a tag, tracks come in run order (file order): sorting a million ids costs 0.4 s.
        order = "score DESC, run, row" if tag else "run, row"
        page = f" LIMIT {int(limit)} OFFSET {int(offset)}" if limit is not None else ""
        # The window count rides on the one scan of the search filter instead of a second scan.
        rows = self._query(
            f"SELECT run, row, score, count(*) OVER () FROM ({' UNION ALL '.join(selects)}) ORDER BY {order}{page}",
            params,
        )
        if rows or limit is None or not offset:
            return [row[:3] for row in rows], rows[0][3] if rows else 0
        return [], self._query(f"SELECT count(*) FROM ({' UNION ALL '.join(selects)})", params)[0][0]

    @staticmethod
    def _run_order_page(filters, limit: int, offset: int) -> tuple[list[tuple], int]:
        """A page of every track in run order: the runs laid end to end, so no query is needed."""
        rows, start = [], 0
        for run, _, _ in filters:
            size = run.table.num_rows
            rows += [(run.index, row, None) for row in range(max(offset - start, 0), min(offset + limit - start, size))]
            start += size
        return rows, start

    def _ranked_page(self, tag: str, filters, limit: int, offset: int) -> tuple[list[tuple], int]:
        """A page of a tag filter through the rank columns, without sorting the run.

        ``rank`` orders a run's tracks by (score desc, row), so the tracks above a minimum are
        ranks 0..n-1: one run's page is a range of ranks, and in several runs no track ranked
        past offset + limit in its own run can reach the page."""
        selects, counts, params, count_params = [], [], [], []
        for run, where, values in filters:
            rank, score = run.rank_column(tag), run.column(tag)
            bounds = (
                f"{rank} >= {int(offset)} AND {rank} < {int(offset + limit)}"
                if len(filters) == 1
                else f"{rank} < {int(offset + limit)}"
            )
            selects.append(
                f"SELECT {run.index} AS run, row, {score} AS score, {rank} AS rank "
                f"FROM {run.view} WHERE {' AND '.join(where + [bounds])}"
            )
            counts.append(f"SELECT count(*) AS n FROM {run.view} WHERE {' AND '.join(where)}")
            params += values
            count_params += values
        page = "" if len(filters) == 1 else f" OFFSET {int(offset)}"
        rows = self._query(
            f"SELECT run, row, score FROM ({' UNION ALL '.join(selects)}) "
            f"ORDER BY score DESC, run, rank LIMIT {int(limit)}{page}",
            params,
        )
        total = self._query(f"SELECT sum(n)::BIGINT FROM ({' UNION ALL '.join(counts)})", count_params)[0][0]
        return rows, int(total or 0)

    def tracks(self, tag=None, minimum=0.0, limit=20, offset=0, search="", run=None) -> dict:
        """``{"tracks": [...], "total": N}``: one page of the filter, highest score first."""
        minimum = _minimum(minimum)
        limit, offset = _bounded(limit, 1, MAX_LIMIT, "limit"), _bounded(offset, 0, MAX_OFFSET, "offset")
        rows, total = self._matches(tag, minimum, search, run, limit, offset)
        return {"tracks": [self._summary(run_index, row, score) for run_index, row, score in rows], "total": total}

    def csv_rows(self, tag=None, minimum=0.0, search="", run=None, *, batch: int = 10_000):
        """Every row of the filter (no paging) as lists of CSV rows, header first, ``batch`` rows a list."""
        rows, _ = self._matches(tag, _minimum(minimum), search, run)
        yield [["run", "track_id", "uri", "tag", "score", "duration_s", "model"]]
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            meta = [None] * len(chunk)
            for index, source in enumerate(self.runs):  # one Arrow take per run, not one lookup per row
                positions = [i for i, (run_index, _, _) in enumerate(chunk) if run_index == index]
                if positions:
                    picked = (
                        source.table.take([chunk[i][1] for i in positions])
                        .select(["track_id", "uri", "duration_s", "model_name", "model_version"])
                        .to_pylist()
                    )
                    for i, record in zip(positions, picked):
                        meta[i] = (source.name, record)
            yield [
                [
                    name,
                    record["track_id"],
                    record["uri"],
                    tag or "",
                    "" if score is None else f"{score:.6f}",
                    record["duration_s"],
                    f"{record['model_name']}/{record['model_version']}",
                ]
                for (name, record), (_, _, score) in zip(meta, chunk)
            ]

    def _summary(self, run_index: int, row: int, score, *, top_tags: bool = True) -> dict:
        run = self.runs[run_index]
        record = {name: run.table.column(name)[row].as_py() for name in explore_data.META_COLUMNS[:4]}
        entry = {
            "track_id": record["track_id"],
            "uri": record["uri"],
            "score": None if score is None else round(float(score), 6),
            "run": run.name,
            "duration_s": record["duration_s"],
            "model": {
                "name": run.table.column("model_name")[row].as_py(),
                "version": run.table.column("model_version")[row].as_py(),
            },
        }
        if top_tags:
            entry["top_tags"] = self._scores(run, row)[:TOP_TAGS]
        return entry

    @staticmethod
    def _scores(run: Run, row: int) -> list[dict]:
        scores = [(tag, run.table.column(f"s{k}")[row].as_py()) for k, tag in enumerate(run.tags)]
        return [
            {"tag": tag, "score": round(value, 6), "threshold": run.thresholds.get(tag)}
            for tag, value in sorted(scores, key=lambda item: (-(item[1] if item[1] is not None else -1), item[0]))
            if value is not None
        ]

    # ------------------------------------------------------------------ one track

    def _locate(self, track_id: str) -> list[tuple[Run, int]]:
        found = []
        for run in self.runs:
            rows = self._query(f"SELECT row FROM {run.view} WHERE track_id = ? LIMIT 1", [track_id])
            if rows:
                found.append((run, rows[0][0]))
        return found

    def track(self, track_id: str) -> dict | None:
        """Every tag's score in every run that has the track, and its metadata; None when unknown."""
        found = self._locate(track_id)
        if not found:
            return None
        first_run, first_row = found[0]
        runs = []
        for run, row in found:
            runs.append(
                {
                    "run": run.name,
                    "source": run.source,
                    "model": {
                        "name": run.table.column("model_name")[row].as_py(),
                        "version": run.table.column("model_version")[row].as_py(),
                    },
                    "n_patches": run.table.column("n_patches")[row].as_py(),
                    "scores": self._scores(run, row),
                }
            )
        flat = sorted(
            ({**score, "run": entry["run"]} for entry in runs for score in entry["scores"]), key=lambda s: -s["score"]
        )
        return {
            "track_id": track_id,
            "uri": first_run.table.column("uri")[first_row].as_py(),
            "duration_s": first_run.table.column("duration_s")[first_row].as_py(),
            "scores": flat,
            "runs": runs,
            "segments": any(run.segment_files for run, _ in found),
        }

    def segments(self, track_id: str) -> dict | None:
        """The track's per-patch scores from the first run with a segments table that has it
        (:func:`infra.explore.data.track_segments`); None when no run has them."""
        for run, _ in self._locate(track_id):
            found = explore_data.track_segments(run, track_id)
            if found is not None:
                return found
        return None

    def audio_uri(self, track_id: str) -> str | None:
        """The URI the run lists for the track, or None: the only files the audio endpoint serves."""
        found = self._locate(track_id)
        return found[0][0].table.column("uri")[found[0][1]].as_py() if found else None

    def similar(self, track_id: str, k: int = 10) -> list[dict] | None:
        """Similar tracks from the first run that has the track (None when no run has it)."""
        from tagruns.similar import Searcher

        found = self._locate(track_id)
        if not found:
            return None
        k = _bounded(k, 1, 100, "k")
        directory = found[0][0].source
        try:
            with self._searchers_lock:  # one load per run, however many pages ask at once
                if directory not in self._searchers:
                    self._searchers[directory] = Searcher(directory)
            return self._searchers[directory].by_track(track_id, k)
        except TagscaleError:
            return None

    # ------------------------------------------------------------------ summary

    def stats_for(self, run: Run) -> list[dict]:
        return self.stats()["runs"][run.index]["tags"]

    def stats(self) -> dict:
        """Tracks per tag above 0.5, score histograms, dead letters; computed once (runs do not change)."""
        with self._lock:
            if self._stats is None:
                runs = [
                    {
                        "run": run.name,
                        "source": run.source,
                        "tracks": run.table.num_rows,
                        "tags": explore_data.tag_stats(run),
                        "dead_letters": explore_data.dead_letters(self._db, run),
                    }
                    for run in self.runs
                ]
                self._stats = {
                    "bins": [round(i / explore_data.HISTOGRAM_BINS, 4) for i in range(explore_data.HISTOGRAM_BINS + 1)],
                    "tracks": sum(run["tracks"] for run in runs),
                    "dead_letters": sum(entry["count"] for run in runs for entry in run["dead_letters"]),
                    "runs": runs,
                }
            return self._stats


def _minimum(value) -> str | float:
    if value in (None, ""):
        return 0.0
    if value == "calibrated":
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"min must be a number or 'calibrated', got {value!r}") from None
    if number != number:  # NaN
        raise BadRequest("min must be a number")
    return number


def _bounded(value, low: int, high: int | None, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be an integer, got {value!r}") from None
    if number < low or (high is not None and number > high):
        raise BadRequest(f"{name} must be between {low} and {high if high is not None else 'any'}, got {number}")
    return number
