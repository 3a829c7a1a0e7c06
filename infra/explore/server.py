"""explore: a local web app over one or more tag runs (Browse, Track, Summary).

    tagscale explore --tags DIR [--tags DIR2 ...] [--thresholds FILE] [--port 8765] [--host 127.0.0.1]
        [--allow-host NAME] [--labels DIR] [--probe DIR]

The standard library's ThreadingHTTPServer serves a JSON API (docs/explorer.md) and
six static files from ``infra/explore/static`` (one HTML page, four vanilla JS files, one
stylesheet: no build step, no CDN, so it works offline). Queries run in DuckDB
(:mod:`infra.explore.query`); the curator's labels and their guarded writes are in
:mod:`infra.explore.labels`.
"""

from __future__ import annotations

import argparse
import csv
import io
import ipaddress
import itertools
import json
import os
import pathlib
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from infra.explore.audio import AUDIO_TYPES, CHUNK, open_audio, parse_range
from infra.explore.labels import GET_ROUTES, Curation
from infra.explore.query import BadRequest, Explorer
from runtime.errors import TagscaleError
from runtime.terminal import printable

STATIC_DIR = pathlib.Path(__file__).resolve().parent / "static"
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
    "/static/heatmap.js": ("heatmap.js", "text/javascript; charset=utf-8"),
    "/static/curate.js": ("curate.js", "text/javascript; charset=utf-8"),
    "/static/review.js": ("review.js", "text/javascript; charset=utf-8"),
}
# Sent with every response. The page loads only its own script, stylesheet, API and audio (no
# inline script or style: the app sets styles through the DOM), and no other site may frame it
# or embed its audio.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Referrer-Policy": "no-referrer",
}
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
# What makes a spreadsheet read a CSV cell as a formula (OWASP's list, and the full-width forms
# some locales also accept); such a cell gets a leading ' so it shows as the text it is.
FORMULA_START = tuple("=+-@\t\r\uff1d\uff0b\uff0d\uff20")


def spreadsheet_safe(cell):
    """``cell`` for a CSV export: text a spreadsheet would run as a formula gets a leading '."""
    return "'" + cell if isinstance(cell, str) and cell.startswith(FORMULA_START) else cell


class Handler(BaseHTTPRequestHandler):
    """Routes: static files, ``/api/...`` JSON and CSV, and audio with Range support."""

    protocol_version = "HTTP/1.1"  # keep-alive: the audio element makes many small range requests
    server: "ExplorerServer"

    def do_HEAD(self):
        self._dispatch(head=True)

    def do_GET(self):
        self._dispatch(head=False)

    def do_POST(self):
        self.close_connection = True  # a refused write leaves its body unread: no next request on it
        self._dispatch(head=False)

    def log_message(self, format, *args):  # noqa: A002 (the base class names it so)
        if not self.server.quiet:  # a request line is anyone's text: escaped, it cannot drive the terminal
            sys.stderr.write(f"{self.address_string()} - {printable(format % args)}\n")

    def end_headers(self):
        for key, value in SECURITY_HEADERS.items():
            self.send_header(key, value)
        super().end_headers()

    def _dispatch(self, *, head: bool) -> None:
        self.head = head
        if self.path.startswith("//") or not self.path.startswith("/") or self._repeated("Host", "Origin"):
            # An absolute URI in the request line names a host beside Host, and of two Host or
            # Origin headers a proxy may read the other one than the checks below: refused.
            return self._error(400, "a request gives a path, one Host header and at most one Origin header")
        if not self.server.host_allowed(self.headers.get("Host")):
            # A page on another site whose name was re-pointed at this address (DNS rebinding)
            # sends its own name here: it gets nothing.
            return self._error(421, "unexpected Host header: open the address tagscale explore printed")
        url = urlsplit(self.path)
        params = {key: values[-1] for key, values in parse_qs(url.query).items()}
        try:
            if self.command == "POST":  # every write goes through the curation checks
                return self.server.curation.post(self)
            if url.path in STATIC:
                name, content_type = STATIC[url.path]
                return self._send(200, (STATIC_DIR / name).read_bytes(), content_type)
            if url.path == "/api/tags":
                return self._json(self.server.explorer.tags())
            if url.path == "/api/stats":
                return self._json(self.server.curation.agreement(self.server.explorer.stats()))
            if url.path in GET_ROUTES:
                return self.server.curation.get(self, url.path, params)
            if url.path == "/api/tracks":
                return self._json(
                    self.server.explorer.tracks(
                        params.get("tag") or None,
                        params.get("min"),
                        params.get("limit", 20),
                        params.get("offset", 0),
                        params.get("q", ""),
                        params.get("run") or None,
                    )
                )
            if url.path == "/api/tracks.csv":
                return self._csv(params)
            parts = url.path.split("/")  # split before unquoting: an id may hold an encoded "/"
            if len(parts) in (4, 5) and parts[:3] == ["", "api", "tracks"] and parts[3]:
                return self._track(unquote(parts[3]), parts[4] if len(parts) == 5 else None, params)
            self._error(404, "not found")
        except (BadRequest, TagscaleError) as error:
            self._error(400, str(error))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away (it cancels media requests freely)
        except Exception as error:  # a bug or an unreadable file: say so, keep serving
            self.log_error("%s failed: %s", self.path, traceback.format_exc())
            self._error(500, f"{type(error).__name__}: {error}")

    def _repeated(self, *names: str) -> bool:
        return any(len(self.headers.get_all(name) or ()) > 1 for name in names)

    def _track(self, track_id: str, action: str | None, params: dict) -> None:
        explorer = self.server.explorer
        if action is None:
            found = explorer.track(track_id)
        elif action == "similar":
            found = explorer.similar(track_id, params.get("k", 10))
        elif action == "audio":
            return self._audio(track_id)
        elif action == "segments":
            found = explorer.segments(track_id)
            if found is None:
                return self._error(404, f"no segments for track {track_id!r} (tag the run with --segments)")
        else:
            return self._error(404, "not found")
        if found is None:
            return self._error(404, f"unknown track {track_id!r}")
        self._json(found)

    def _audio(self, track_id: str) -> None:
        uri = self.server.explorer.audio_uri(track_id)
        if uri is None:  # only URIs the run lists are ever opened
            return self._error(404, f"unknown track {track_id!r}")
        try:
            handle, size = open_audio(uri)
        except OSError:
            return self._error(404, f"audio file missing for {track_id!r}")
        with handle:
            wanted = parse_range(self.headers.get("Range"), size)
            if wanted == "unsatisfiable":
                return self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{size}"})
            start, end = wanted or (0, size - 1)
            headers = {"Accept-Ranges": "bytes"}
            if wanted:
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            suffix = os.path.splitext(uri)[1].lower()
            self._start(
                206 if wanted else 200, AUDIO_TYPES.get(suffix, "application/octet-stream"), end - start + 1, headers
            )
            if self.head:
                return
            handle.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = handle.read(min(CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    def _csv(self, params: dict) -> None:
        """The whole filter as CSV, sent in chunks as it is formatted (a large export never sits in memory)."""
        batches = self.server.explorer.csv_rows(
            params.get("tag") or None, params.get("min"), params.get("q", ""), params.get("run") or None
        )
        header = next(batches)  # the filter is checked here, before the status line goes out
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in (params.get("tag") or "all"))
        self.send_response(200)
        self.send_header("Content-Type", "text/csv; charset=utf-8")
        self.send_header("Content-Disposition", f'attachment; filename="tracks-{name}.csv"')
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.head:
            return
        for rows in itertools.chain([header], batches):
            buffer = io.StringIO()
            # With "\n" ending rows the csv module leaves a lone CR unquoted, and readers end the
            # row there: a row holding one has every cell quoted.
            plain, quoted = (
                csv.writer(buffer, lineterminator="\n", quoting=q) for q in (csv.QUOTE_MINIMAL, csv.QUOTE_ALL)
            )
            for row in rows:
                cells = [spreadsheet_safe(cell) for cell in row]
                (quoted if any(isinstance(cell, str) and "\r" in cell for cell in cells) else plain).writerow(cells)
            data = buffer.getvalue().encode("utf-8")
            self.wfile.write(f"{len(data):X}\r\n".encode("ascii") + data + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def _json(self, value) -> None:
        self._send(200, json.dumps(value).encode("utf-8"), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._send(status, json.dumps({"error": message}).encode("utf-8"), "application/json")

    def _start(self, status: int, content_type: str, length: int, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self._start(status, content_type, len(body), headers)
        if not self.head:
            self.wfile.write(body)


class ExplorerServer(ThreadingHTTPServer):
    """The HTTP server with its :class:`Explorer` and a short log of (method, path, status)."""

    daemon_threads = True

    def __init__(
        self,
        explorer: Explorer,
        host: str = "127.0.0.1",
        port: int = 8765,
        *,
        quiet: bool = False,
        allowed_hosts: list[str] | tuple[str, ...] = (),
        labels: str | None = None,
        probe: str | None = None,
    ):
        self.explorer, self.quiet, self.curation = explorer, quiet, Curation(explorer, labels, probe)
        super().__init__((host, port), Handler)
        self._any_address = host in ("", "0.0.0.0", "::")
        port = self.server_address[1]
        names = [*LOOPBACK, *allowed_hosts] + ([] if self._any_address else [f"[{host}]" if ":" in host else host])
        self._hosts = {f"{name.lower()}:{port}" for name in names}
        if port == 80:  # a browser leaves the default port out of Host
            self._hosts |= {name.lower() for name in names}

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request's Host names this server: the address it listens on, loopback, a
        name given with ``--allow-host``, or, when it listens on every address, any IP address
        (a name can be re-pointed at this machine by whoever runs its DNS; an address cannot)."""
        host = (header or "").strip().lower()
        if host in self._hosts:
            return True
        if not self._any_address:
            return False
        name, _, port = host.rpartition(":")
        try:
            ipaddress.ip_address(name[1:-1] if name.startswith("[") and name.endswith("]") else name)
        except ValueError:
            return False
        return port == str(self.server_address[1])

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> threading.Thread:
        """Serve on a background thread (tests, notebooks); stop with :meth:`stop`."""
        thread = threading.Thread(target=self.serve_forever, name="tagscale-explore", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tagscale explore", description="A local web app over tag runs: Browse, Track, Summary."
    )
    parser.add_argument(
        "--tags",
        action="append",
        required=True,
        metavar="DIR",
        help="the --output directory of `tagscale tag` (local or gs://); repeat for several runs",
    )
    parser.add_argument("--thresholds", metavar="FILE", help="calibrated per-tag thresholds from `tagscale calibrate`")
    parser.add_argument("--port", type=int, default=8765, help="port (8765; 0 picks a free one)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (127.0.0.1: this machine only; the app has no login, so bind wider with care)",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the browser may use besides the address bound and loopback (e.g. this "
        "machine's name with --host 0.0.0.0); requests naming any other host are refused",
    )
    parser.add_argument(
        "--labels",
        metavar="DIR",
        help="a local folder for the curator's yes/no decisions (created; the runs are not edited)",
    )
    parser.add_argument(
        "--probe",
        metavar="DIR",
        help="a PROBE folder of `tagscale probe train`: the Summary plots its learning curve per tag (report.json)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"tagscale explore: reading {len(args.tags)} run(s)...", flush=True)
    explorer = Explorer.open(args.tags, args.thresholds)
    try:
        server = ExplorerServer(
            explorer,
            args.host,
            args.port,
            quiet=args.quiet,
            allowed_hosts=args.allow_host,
            labels=args.labels,
            probe=args.probe,
        )
    except (OSError, TagscaleError) as error:
        explorer.close()
        if isinstance(error, TagscaleError):  # the labels folder or the probe
            raise
        raise TagscaleError(f"cannot listen on {args.host}:{args.port}: {error.strerror or error}") from error
    tracks = sum(run.table.num_rows for run in explorer.runs)
    print(
        f"tagscale explore: {tracks} tracks in {len(explorer.runs)} run(s); open {server.url} (Ctrl-C stops)",
        flush=True,
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"tagscale explore: warning: listening on {args.host}; "
            "anyone who can reach it can browse and play the catalog",
            flush=True,
        )
    try:
        server.serve_forever()
    finally:
        server.server_close()
        explorer.close()
    return 0


if __name__ == "__main__":
    from runtime.errors import run_command

    sys.exit(run_command("explore", main))
