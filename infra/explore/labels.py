"""The explorer's curation endpoints: the session token, labels, the review queue, agreement.

    GET  /api/session                  -> {"token": ..., "labels": true|false}
    POST /api/labels                   {"track_id", "tag", "verdict": "yes"|"no"} -> 201 (the decision)
    GET  /api/labels?track_id=ID       -> {"labels": [latest decision per tag of the track]}
    GET  /api/review?tag=T&limit=N     -> {"tracks": [not yet labelled for T, closest to T's threshold first],
                                           "left", "decided", "agree"}
    GET  /api/labels/tags              -> {"tags": [{"tag", "decisions", "yes", "no"}]} (latest per track)
    GET  /api/probe/report             -> report.json of ``--probe DIR`` with the probe's name

The explorer binds loopback, yet any page the curator visits may send requests to it. A write
is therefore accepted only with the per-process token in a header (a page on another origin
cannot read ``/api/session``, and a header, unlike a cookie, is never sent on its own), from
a Host the server answers to, from no Origin or its own, as JSON of bounded size.
"""

from __future__ import annotations

import hmac
import json
import secrets
from urllib.parse import urlsplit

import numpy as np
import pyarrow
import pyarrow.compute as pc

from infra.explore.query import BadRequest, _bounded
from pipelines.storage import outputs
from runtime.errors import TagscaleError
from tagruns.labels import LabelStore, check_decision

TOKEN_HEADER = "X-Tagscale-Token"
MAX_BODY = 4096  # one decision is a few hundred bytes
DEFAULT_THRESHOLD = 0.5  # a tag without a calibrated threshold is taken as present above 0.5
GET_ROUTES = ("/api/session", "/api/labels", "/api/review", "/api/labels/tags", "/api/probe/report")


class Curation:
    """The labels folder (None without ``--labels``), the token of this server process, and the
    report of a probe trained on the labels (``--probe``; None without)."""

    def __init__(self, explorer, labels_dir: str | None = None, probe_dir: str | None = None):
        self.explorer = explorer
        if labels_dir:
            inside = [r.source for r in explorer.runs if outputs.within(labels_dir, r.source)]
            if inside:  # a run is read, never written to
                raise TagscaleError(f"--labels {labels_dir} is inside the tag run {inside[0]}: use a folder of its own")
        self.store = LabelStore(labels_dir, create=True) if labels_dir else None
        self.token = secrets.token_urlsafe(32)
        self.report = read_report(probe_dir) if probe_dir else None

    # ------------------------------------------------------------------ requests

    def get(self, handler, path: str, params: dict) -> None:
        if path == "/api/session":
            return handler._json(
                {"token": self.token, "labels": self.store is not None, "probe": self.report is not None}
            )
        if path == "/api/review":
            return handler._json(self.review(params.get("tag", ""), params.get("limit", 20)))
        if path == "/api/probe/report":
            if self.report is None:
                return handler._error(404, "no probe: start tagscale explore with --probe DIR")
            return handler._json(self.report)
        if self.store is None:
            return handler._error(404, "labels are off: start tagscale explore with --labels DIR")
        if path == "/api/labels/tags":
            return handler._json({"tags": self.tag_counts()})
        handler._json({"labels": self.labels(params.get("track_id", ""))})

    def post(self, handler) -> None:
        """A write, refused (403, 411, 413 or 415, nothing written) unless every check passes."""
        refusal = self.refusal(handler)
        if refusal:
            return handler._error(*refusal)
        body = handler.rfile.read(int(handler.headers["Content-Length"]))
        if urlsplit(handler.path).path != "/api/labels":
            return handler._error(404, "not found")
        if self.store is None:
            return handler._error(404, "labels are off: start tagscale explore with --labels DIR")
        try:
            request = json.loads(body)
            if not isinstance(request, dict):
                raise ValueError("expected a JSON object")
            record = self.label(request.get("track_id"), request.get("tag"), request.get("verdict"), request.get("run"))
        except RecursionError:  # JSON nested deeper than Python's stack
            return handler._error(400, "bad request body: JSON nested too deep")
        except ValueError as error:
            return handler._error(400, f"bad request body: {error}")
        except (BadRequest, TagscaleError) as error:
            return handler._error(400, str(error))
        handler._send(201, json.dumps(record).encode("utf-8"), "application/json")

    def refusal(self, handler) -> tuple[int, str] | None:
        """``(status, message)`` when a write must be refused, None when it may go on."""
        # The Host header was checked for every request, this one too, before it was routed here.
        server, headers = handler.server, handler.headers
        origin = headers.get("Origin")
        if origin is not None and not _same_origin(server, origin):
            return 403, "a write from another origin is refused"
        if not hmac.compare_digest(headers.get(TOKEN_HEADER, "").encode(), self.token.encode()):
            return 403, f"a write needs the {TOKEN_HEADER} header of GET /api/session"
        if (headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
            return 415, "a write is JSON: Content-Type: application/json"
        length = headers.get("Content-Length", "")
        if not length.isdigit() or headers.get("Transfer-Encoding"):
            return 411, "a write needs a Content-Length"
        if int(length) > MAX_BODY:
            return 413, f"a write is at most {MAX_BODY} bytes"
        return None

    # ------------------------------------------------------------------ answers

    def label(self, track_id, tag, verdict, run_name=None) -> dict:
        """Store one decision on a track of the open runs (of run ``run_name``, else the first that has it)."""
        track_id, tag, verdict = check_decision(track_id, tag, verdict)  # before the id goes into a query
        found = [(run, row) for run, row in self.explorer._locate(track_id) if run_name in (None, run.name)]
        if not found:
            raise BadRequest(f"unknown track {track_id!r}" + (f" in run {run_name!r}" if run_name else ""))
        run, row = found[0]
        model = {
            "name": run.table.column("model_name")[row].as_py(),
            "version": run.table.column("model_version")[row].as_py(),
        }
        return self.store.append(track_id, tag, verdict, run=run.source, model=model)

    def labels(self, track_id: str) -> list[dict]:
        """The latest decision on each tag of one track, by tag."""
        latest = self.store.latest()
        return [latest[key] for key in sorted(latest) if key[0] == track_id]

    def tag_counts(self) -> list[dict]:
        """Per tag with decisions, how many tracks have one and how many of those say yes / no."""
        counts: dict[str, dict] = {}
        for (_, tag), record in self.store.latest().items():
            entry = counts.setdefault(tag, {"tag": tag, "decisions": 0, "yes": 0, "no": 0})
            entry["decisions"] += 1
            entry[record["verdict"]] += 1
        return [counts[tag] for tag in sorted(counts)]

    def review(self, tag: str, limit) -> dict:
        """Tracks not yet labelled for ``tag``, closest to its threshold first (the least sure),
        with ``left`` (how many such tracks there are), ``decided`` (the tracks of the runs with
        a decision on ``tag``) and ``agree`` (of those, how many the model agrees with at the
        threshold, the first run that scores the track counting, as on the Summary)."""
        limit = _bounded(limit, 1, 500, "limit")
        runs = [run for run in self.explorer.runs if tag in run.tags]
        if not runs:
            raise BadRequest(f"unknown tag {tag!r}")
        latest = self.store.latest() if self.store else {}
        done = sorted({key[0] for key in latest if key[1] == tag})
        candidates, unlabelled = [], []
        for run in runs:
            threshold = run.thresholds.get(tag, DEFAULT_THRESHOLD)
            scores = run.table.column(run.column(tag)).to_numpy(zero_copy_only=False).astype(np.float64)
            labelled = pc.is_in(run.table.column("track_id"), pyarrow.array(done, pyarrow.string()))
            rows = np.flatnonzero(~np.isnan(scores) & ~labelled.to_numpy(zero_copy_only=False))
            unlabelled.append((run, rows))
            distance = np.abs(scores[rows] - threshold)
            wanted = min(limit * 2, len(rows))  # enough to fill a page after duplicates go
            # Only the nearest few are sorted (a full sort of a million scores takes 0.1 s); the
            # ties at the cut come along, so the order stays (distance, row).
            pick = np.arange(len(rows))
            if 0 < wanted < len(rows):
                pick = np.flatnonzero(distance <= np.partition(distance, wanted - 1)[wanted - 1])
            order = pick[np.lexsort((rows[pick], distance[pick]))][:wanted]
            candidates += [(float(distance[i]), run.index, int(rows[i]), threshold) for i in order]
        tracks, seen = [], set()
        for distance, run_index, row, threshold in sorted(candidates):
            entry = self.explorer._summary(run_index, row, None, top_tags=False)
            if entry["track_id"] in seen:  # a track of several runs: its closest score counts
                continue
            seen.add(entry["track_id"])
            score = self.explorer.runs[run_index].table.column(self.explorer.runs[run_index].column(tag))[row]
            segments = bool(self.explorer.runs[run_index].segment_files)  # the desk draws them
            tracks.append({**entry, "score": round(score.as_py(), 6), "threshold": threshold, "segments": segments})
            if len(tracks) == limit:
                break
        if len(runs) == 1:
            left = len(unlabelled[0][1])
        else:  # a track in several runs is one question: counted once
            ids = [run.table.column("track_id").take(pyarrow.array(rows)) for run, rows in unlabelled]
            chunks = pyarrow.chunked_array([chunk for part in ids for chunk in part.chunks], type=ids[0].type)
            left = pc.count_distinct(chunks).as_py()
        return {"tag": tag, "tracks": tracks, "left": left, **self._decided(tag, runs, done, latest)}

    def _decided(self, tag: str, runs: list, done: list[str], latest: dict) -> dict:
        """``{"decided", "agree"}`` of :meth:`review`: the latest decisions on ``tag`` of tracks the
        runs score, and how many the model agrees with."""
        decided = agree = 0
        pending = set(done)
        for run in runs:
            if not pending:
                break
            found = self.explorer._query(
                f"SELECT track_id, row FROM {run.view} WHERE list_contains(?, track_id)", [sorted(pending)]
            )
            threshold = run.thresholds.get(tag, DEFAULT_THRESHOLD)
            for track_id, row in found:
                score = run.table.column(run.column(tag))[row].as_py()
                if score is None or track_id not in pending:
                    continue
                pending.discard(track_id)
                decided += 1
                agree += (score >= threshold) == (latest[(track_id, tag)]["verdict"] == "yes")
        return {"decided": decided, "agree": agree}

    def agreement(self, stats: dict) -> dict:
        """``stats`` with, per run and tag, ``labels``: ``{"decisions", "agree"}``, the latest
        decisions on the run's tracks and how many the model agrees with at the tag's threshold."""
        if self.store is None:
            return stats
        latest = list(self.store.latest().values())
        ids = sorted({record["track_id"] for record in latest})
        runs = []
        for run, entry in zip(self.explorer.runs, stats["runs"]):
            rows = dict(
                self.explorer._query(f"SELECT track_id, row FROM {run.view} WHERE list_contains(?, track_id)", [ids])
            )
            counts = {tag: {"decisions": 0, "agree": 0} for tag in run.tags}
            for record in latest:
                if record["track_id"] in rows and record["tag"] in counts:
                    score = run.table.column(run.column(record["tag"]))[rows[record["track_id"]]].as_py()
                    if score is None:
                        continue
                    threshold = run.thresholds.get(record["tag"], DEFAULT_THRESHOLD)
                    counts[record["tag"]]["decisions"] += 1
                    counts[record["tag"]]["agree"] += (score >= threshold) == (record["verdict"] == "yes")
            tags = [{**tag, "labels": counts[tag["tag"]]} for tag in entry["tags"]]
            runs.append({**entry, "tags": tags})
        return {**stats, "runs": runs}


def _same_origin(server, origin: str) -> bool:
    """Whether an Origin header names this server: http, and a host the server answers to."""
    parts = urlsplit(origin)
    return parts.scheme == "http" and not parts.path and server.host_allowed(parts.netloc)


def read_report(probe_dir: str) -> dict:
    """``--probe DIR``'s report.json (``tagscale probe train`` writes it) with the probe's name."""
    from pipelines.storage import fileio
    from tagruns import probe, probe_report

    document = probe.read_probe(probe_dir)
    path = fileio.join(probe_dir.rstrip("/"), probe_report.REPORT_FILE)
    try:
        report = json.loads(fileio.read_text(path))
    except Exception as error:  # missing, unreadable or not JSON: one line
        raise TagscaleError(
            f"cannot read {path}: {str(error).splitlines()[0]} (train the probe again with tagscale probe train)"
        ) from None
    if not isinstance(report, dict) or not isinstance(report.get("tags"), dict):
        raise TagscaleError(f"{path} is not a report of tagscale probe train")
    return {"probe": document["name"], "tags": report["tags"]}
