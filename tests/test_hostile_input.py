"""Hostile input, each case as a user could make it: a catalog row that cannot be a track, a
planted file in a labels folder, tag names that drive a terminal or hide as a view's column,
thresholds that are not numbers, requests the explorer must not answer. One bad row never ends
a run, a planted file never hangs a reader, and nothing reaches the terminal raw."""

import json
import os
import threading
import time
import unicodedata

import pyarrow
import pyarrow.parquet as pq
import pytest
from tag_runs import small_run

from infra.cli import main as cli
from pipelines import catalog, catalog_checks, names
from runtime.errors import TagscaleError
from tagruns import calibrate, labels

MODEL = {"name": "m", "version": "v"}
LONG_ID = "x" * names.MAX_ID_CHARS


def err_line(capsys) -> str:
    """The one line a refused command printed, after checking it is one line and no traceback."""
    out, err = capsys.readouterr()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "\x1b" not in out + err and "\x07" not in out + err
    return err.strip()


def dead_and_tracks(path) -> tuple[dict, list]:
    out = list(catalog.parse_rows(str(path)))
    dead = {item.value["error"].split(":")[0]: item.value for item in out if hasattr(item, "tag")}
    return dead, [track_id for track_id, _ in (item for item in out if not hasattr(item, "tag"))]


# ---------------------------------------------------------------------------- the catalog


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_nul_in_a_uri_is_a_dead_letter_row_and_the_output_check_passes(tmp_path, fmt):
    from pipelines.storage import outputs

    rows = [("a", "/music/a.wav"), ("b", "/music/b\0.wav"), ("c", "/music/c.wav")]
    path = tmp_path / f"catalog.{fmt}"
    if fmt == "csv":
        path.write_text("track_id,uri\n" + "".join(f"{i},{u}\n" for i, u in rows))
    else:  # JSON spells the NUL \u0000
        path.write_text("".join(json.dumps({"track_id": i, "uri": u}) + "\n" for i, u in rows))
    dead, tracks = dead_and_tracks(path)
    assert tracks == ["a", "c"]
    assert dead["row 2"]["stage"] == "catalog" and dead["row 2"]["track_id"] == "b"
    assert dead["row 2"]["error"] == "row 2: uri contains a NUL byte, which no file name can hold"
    # The check before a run reads the catalog's uris; the NUL row is not among them.
    assert [uri for _, uri in catalog_checks.audio_uris(str(path))] == ["/music/a.wav", "/music/c.wav"]
    audio = catalog_checks.audio_uris(str(path))
    outputs.check_output(str(tmp_path / "out"), catalog=str(path), catalog_audio=audio, entries=("tags",))


def test_jsonl_fields_of_the_wrong_type_are_dead_letter_rows_naming_the_field(tmp_path):
    rows = [
        {"track_id": {"nested": 1}, "uri": "/a.wav"},
        {"track_id": "b", "uri": ["/b.wav"]},
        {"track_id": "c", "uri": "/c.wav", "tags": ["rock", {"x": 1}]},
        {"track_id": "d", "uri": "/d.wav", "split": ["train"]},
        {"track_id": True, "uri": "/e.wav"},
        {"track_id": 42, "uri": "/f.wav", "tags": "rock"},  # a number is an id (Parquet int columns)
    ]
    path = tmp_path / "catalog.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dead, tracks = dead_and_tracks(path)
    assert tracks == ["42"]
    assert {key: (row["track_id"], row["uri"], row["error"]) for key, row in dead.items()} == {
        "row 1": ("", "/a.wav", "row 1: track_id must be text or a whole number, got dict"),
        "row 2": ("b", "", "row 2: uri must be text, got list"),
        "row 3": ("c", "/c.wav", "row 3: tags must be a list of text, got a dict in it"),
        "row 4": ("d", "/d.wav", "row 4: split must be text, got list"),
        "row 5": ("", "/e.wav", "row 5: track_id must be text or a whole number, got bool"),
    }


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_one_track_id_length_limit_in_every_catalog_format(tmp_path, fmt):
    rows = [
        {"track_id": LONG_ID, "uri": "/a.wav"},
        {"track_id": LONG_ID + "y", "uri": "/b.wav"},
        {"track_id": "z" * 20_000, "uri": "/c.wav"},
    ]
    path = tmp_path / f"catalog.{fmt}"
    if fmt == "csv":
        path.write_text("track_id,uri\n" + "".join(f"{r['track_id']},{r['uri']}\n" for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        pq.write_table(pyarrow.Table.from_pylist(rows), path)
    dead, tracks = dead_and_tracks(path)
    assert tracks == [LONG_ID]
    assert dead["row 2"]["error"] == f"row 2: track_id has 513 characters, over the limit of {names.MAX_ID_CHARS}"
    assert dead["row 3"]["error"] == f"row 3: track_id has 20000 characters, over the limit of {names.MAX_ID_CHARS}"
    assert len(dead["row 3"]["track_id"]) == names.MAX_ID_CHARS  # the dead letter keeps a usable prefix


def test_catalog_tags_are_checked_by_the_one_tag_name_rule(tmp_path):
    path = tmp_path / "catalog.jsonl"
    rows = [
        ("a", ["rock", "Track_ID"]),
        ("b", ["evil\u202eyalp"]),
        ("c", ["line\u2028break"]),
        ("d", ["cafe\u0301", "caf\u00e9", "start_s "]),
        ("e", ["cafe\u0301", "caf\u00e9"]),
    ]
    path.write_text("".join(json.dumps({"track_id": i, "uri": f"/{i}.wav", "tags": t}) + "\n" for i, t in rows))
    out = list(catalog.parse_rows(str(path)))
    errors = {item.value["track_id"]: item.value["error"] for item in out if hasattr(item, "tag")}
    assert errors == {
        "a": "row 1: tag 'Track_ID' is named like a column of the query views (track_id, uri, start_s, end_s, "
        "in any case); rename it",
        "b": "row 2: tag 'evil\\u202eyalp' contains a format character",
        "c": "row 3: tag 'line\\u2028break' contains a line separator",
        "d": "row 4: tag 'start_s' is named like a column of the query views (track_id, uri, start_s, end_s, "
        "in any case); rename it",
    }
    (track,) = [item[1][1] for item in out if not hasattr(item, "tag")]
    assert track.tags == ("caf\u00e9",)  # NFD and NFC are one tag, stored in NFC


# ------------------------------------------------------------------------- labels folders


def _decisions_dir(tmp_path) -> str:
    store = labels.LabelStore(str(tmp_path / "labels"), create=True)
    store.append("t1", "piano", "yes", run="r", model=MODEL)
    return store.path


def _read_in_a_thread(path: str, unblock=None):
    """``labels.read_labels(path)``'s result or error, or "hung" after 20 s (``unblock`` then
    frees the stuck thread so the test process can end)."""
    result = {}

    def read():
        try:
            result["value"] = labels.read_labels(path)
        except TagscaleError as error:
            result["error"] = str(error)

    thread = threading.Thread(target=read, daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(20)
    if thread.is_alive():
        if unblock:
            unblock()
        return "hung", time.monotonic() - start
    return result, time.monotonic() - start


def test_a_fifo_in_decisions_is_named_as_not_a_decision_instead_of_hanging(tmp_path):
    folder = _decisions_dir(tmp_path)
    fifo = os.path.join(folder, "99999999999999999999-1-planted.json")
    os.mkfifo(fifo)

    result, seconds = _read_in_a_thread(str(tmp_path / "labels"), lambda: _unblock(fifo))
    assert result == {"error": f"{fifo} is not a decision: not a regular file"}
    assert seconds < 5


def test_a_decision_linked_to_dev_zero_or_oversized_is_named_without_reading_it_all(tmp_path):
    folder = _decisions_dir(tmp_path)
    link = os.path.join(folder, "99999999999999999999-1-zero.json")
    os.symlink("/dev/zero", link)
    result, seconds = _read_in_a_thread(str(tmp_path / "labels"))
    assert result == {"error": f"{link} is not a decision: not a regular file"} and seconds < 5
    os.unlink(link)
    big = os.path.join(folder, "99999999999999999999-1-big.json")
    with open(big, "w") as handle:
        handle.write(json.dumps({"track_id": "t2", "tag": "x", "verdict": "yes", "pad": " " * 10_000_000}))
    result, _ = _read_in_a_thread(str(tmp_path / "labels"))
    assert result == {"error": f"{big} is not a decision: over {labels.MAX_DECISION_BYTES} bytes"}


@pytest.mark.parametrize(
    "tag, message",
    [
        ("evil\u202eyalp", "contains a format character"),
        ("a\u2028b", "contains a line separator"),
        ("a\u2029b", "contains a paragraph separator"),
        ("zero\u200bwidth", "contains a format character"),
        ("track_id", "named like a column"),
        ("Track_ID", "named like a column"),
        ("URI", "named like a column"),
        ("end_s", "named like a column"),
        ("\ud800", "not valid UTF-8"),
    ],
)
def test_the_label_store_refuses_format_separator_and_view_column_tags(tmp_path, tag, message):
    store = labels.LabelStore(str(tmp_path / "labels"), create=True)
    with pytest.raises(TagscaleError, match=message):
        store.append("t1", tag, "yes", run="r", model=MODEL)
    assert store.decisions() == []


def test_nfc_and_nfd_spellings_are_one_tag_in_labels(tmp_path):
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    store = labels.LabelStore(str(tmp_path / "labels"), create=True)
    store.append("t1", nfd, "yes", run="r", model=MODEL)
    store.append("t1", nfc, "no", run="r", model=MODEL)
    # a decision copied in from elsewhere, written in NFD
    with open(os.path.join(store.path, "99999999999999999999-1-copied.json"), "w") as handle:
        json.dump({"track_id": "t2", "tag": nfd, "verdict": "yes", "run": "r", "model": MODEL}, handle)
    latest = labels.LabelStore(str(tmp_path / "labels")).latest()
    assert sorted(latest) == [("t1", nfc), ("t2", nfc)] and latest[("t1", nfc)]["verdict"] == "no"
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text(f"track_id,tag\nt1,{nfd}\nt1,{nfc}\nt2,{nfc}\n")
    assert labels.read_labels(str(csv_file)) == {"t1": {nfc}, "t2": {nfc}}
    assert unicodedata.is_normalized("NFC", next(iter(labels.read_labels(str(csv_file))["t1"])))


# ------------------------------------------------------------------------------ labels CSV


def _labelled_run(tmp_path, tag_of_positives: str) -> tuple[str, str]:
    scores = [{"a": 0.9 if i % 2 == 0 else 0.2} for i in range(10)]
    run = small_run(tmp_path / "run", scores, [[float(i), 1.0] for i in range(10)])
    path = tmp_path / "labels.csv"
    path.write_text("track_id,tag\n" + "".join(f"t{i},{'a' if i % 2 == 0 else tag_of_positives}\n" for i in range(10)))
    return run, str(path)


@pytest.mark.parametrize("command", ["calibrate", "evaluate", "probe"])
@pytest.mark.parametrize(
    "tag, message",
    [
        ("x\x1b]0;pwned\x07", r"tag 'x\x1b]0;pwned\x07' contains a control character"),
        ("nul\0tag", r"tag 'nul\x00tag' contains a control character"),
        ("rtl\u202etag", r"tag 'rtl\u202etag' contains a format character"),
        ("Track_ID", "tag 'Track_ID' is named like a column of the query views"),
    ],
)
def test_a_labels_csv_tag_is_checked_as_every_other_way_labels_come_in(tmp_path, capsys, command, tag, message):
    run, path = _labelled_run(tmp_path, tag)
    argv = {
        "calibrate": ["calibrate", "--tags", run, "--labels", path, "--output", str(tmp_path / "t.json")],
        "evaluate": ["evaluate", "--tags", run, "--labels", path],
        "probe": ["probe", "train", "--tags", run, "--labels", path, "--output", str(tmp_path / "probe")],
    }[command]
    assert cli(argv) == 2
    assert err_line(capsys).startswith(f"tagscale {command}: error: {path}, line 3: {message}")
    assert not os.path.exists(tmp_path / "t.json") and not os.path.exists(tmp_path / "probe")


def test_a_labels_csv_with_a_byte_order_mark_and_crlf_is_read(tmp_path, capsys):
    run, path = _labelled_run(tmp_path, "z")
    text = open(path).read()
    with open(path, "wb") as handle:  # what a spreadsheet program saves
        handle.write(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    assert labels.read_labels(path) == {f"t{i}": {"a" if i % 2 == 0 else "z"} for i in range(10)}
    assert cli(["evaluate", "--tags", run, "--labels", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["per_tag"]["a"]["roc_auc"] == 1.0


def test_a_probe_file_naming_a_view_column_is_refused(tmp_path, capsys):
    from tagruns import probe

    folder = tmp_path / "probe"
    folder.mkdir()
    document = {"name": "p", "version": "1", "source_model": MODEL, "tags": {"track_id": {"weights": [1.0]}}}
    (folder / probe.PROBE_FILE).write_text(json.dumps(document))
    with pytest.raises(TagscaleError, match="tag 'track_id' is named like a column of the query views"):
        probe.read_probe(str(folder))


# ------------------------------------------------------------------------------ thresholds


BAD_THRESHOLDS = {
    "null": ("null", "None"),
    "NaN": ("NaN", "nan"),
    "Infinity": ("Infinity", "inf"),
    "1e999999": ("1e999999", "inf"),
    "1e308": ("1e308", "1e+308"),
    "negative": ("-0.1", "-0.1"),
    "text": ('"0.5"', "'0.5'"),
    "boolean": ("true", "True"),
}


@pytest.mark.parametrize("case", sorted(BAD_THRESHOLDS))
def test_a_threshold_is_a_finite_number_from_0_to_1_wherever_it_is_read(tmp_path, capsys, case):
    from explore_run import write_run

    written, shown = BAD_THRESHOLDS[case]
    run = str(tmp_path / "run")
    write_run(tmp_path / "run", tracks=4)
    path = tmp_path / "thresholds.json"
    path.write_text('{"tags": {"piano": {"threshold": 0.5}, "drums": {"threshold": %s}}}' % written)
    expected = f"{path}: the threshold of tag 'drums' must be a number from 0 to 1, got {shown}"
    for argv in (
        ["query", "--tags", run, "top", "drums", "--thresholds", str(path)],
        ["query", "--tags", run, "when", "trk-000", "drums", "--thresholds", str(path)],
        ["query", "--tags", run, "sql", "SELECT 1", "--thresholds", str(path)],
        ["explore", "--tags", run, "--thresholds", str(path), "--port", "0"],
    ):
        assert cli(argv) == 2, argv
        assert err_line(capsys) == f"tagscale {argv[0]}: error: {expected}"


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1.5", "1e308"])
def test_the_threshold_flag_is_checked_too(tmp_path, capsys, value):
    run = small_run(tmp_path / "run", [{"a": 0.5}], [[1.0]])
    assert cli(["query", "--tags", run, "when", "t0", "a", "--threshold", value]) == 2
    assert err_line(capsys) == (
        f"tagscale query: error: --threshold: the threshold of tag 'a' must be a number from 0 to 1, "
        f"got {float(value)!r}"
    )
    assert calibrate.parse_threshold(1, "a", "x") == 1.0 and calibrate.parse_threshold(0.0, "a", "x") == 0.0


# ------------------------------------------------------------------------------ the explorer


@pytest.fixture
def explorer_site(tmp_path):
    """A served run holding two ids of the longest length a catalog lets in, with labels on."""
    from explore_http import record_requests
    from explore_run import write_run

    from infra.explore.query import Explorer
    from infra.explore.server import ExplorerServer
    from runfolder.schema import TAGS_SCHEMA

    write_run(tmp_path / "run", tracks=4)
    longest = ["\u00e9" * names.MAX_ID_CHARS, "\U0001f3b5" * names.MAX_ID_CHARS]
    rows = pq.read_table(next((tmp_path / "run" / "tags").iterdir())).to_pylist()[:2]
    for row, track_id in zip(rows, longest):
        row["track_id"] = track_id
    pq.write_table(pyarrow.Table.from_pylist(rows, schema=TAGS_SCHEMA), tmp_path / "run" / "tags" / "long.parquet")
    explorer = Explorer.open([str(tmp_path / "run")], None)
    server = ExplorerServer(explorer, "127.0.0.1", 0, quiet=True, labels=str(tmp_path / "labels"))
    record_requests(server)
    server.start()
    yield server, longest
    server.stop()
    explorer.close()


def _request(server, method, target, headers, body=None):
    """``(status, parsed body)`` of one raw request: the request line and headers exactly as given."""
    import socket

    lines = [f"{method} {target} HTTP/1.1", *(f"{key}: {value}" for key, value in headers)]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + (body or b"")
    with socket.create_connection(server.server_address[:2], timeout=30) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload or b"null")


def _token(server) -> str:
    host = f"127.0.0.1:{server.server_address[1]}"
    return _request(server, "GET", "/api/session", [("Host", host), ("Connection", "close")])[1]["token"]


def _write_headers(server, token, *extra):
    host = f"127.0.0.1:{server.server_address[1]}"
    return [("Host", host), ("Content-Type", "application/json"), ("X-Tagscale-Token", token), *extra]


def test_the_explorer_opens_and_labels_ids_of_the_longest_length(explorer_site):
    from urllib.parse import quote

    server, longest = explorer_site
    host = [("Host", f"127.0.0.1:{server.server_address[1]}"), ("Connection", "close")]
    token = _token(server)
    for track_id in longest:
        status, body = _request(server, "GET", "/api/tracks/" + quote(track_id, safe=""), host)
        assert status == 200 and body["track_id"] == track_id
        # a browser's JSON.stringify sends the text as UTF-8 (an escaping client: below)
        text = json.dumps({"track_id": track_id, "tag": "piano", "verdict": "yes"}, ensure_ascii=False)
        status, body = _request(server, "POST", "/api/labels", _write_headers(server, token), text.encode())
        assert status == 201 and body["track_id"] == track_id
    escaped = json.dumps({"track_id": longest[0], "tag": "piano", "verdict": "no"}).encode()
    assert _request(server, "POST", "/api/labels", _write_headers(server, token), escaped)[0] == 201


def test_the_explorer_answers_bad_requests_with_400_not_500(explorer_site):
    server, longest = explorer_site
    port = server.server_address[1]
    host = ("Host", f"127.0.0.1:{port}")
    token = _token(server)
    cases = {
        "lone surrogate": (b'{"track_id": "\\ud800", "tag": "piano", "verdict": "yes"}', []),
        "deep JSON": (b"[" * 1900 + b"]" * 1900, []),
        "deep JSON inside": (b'{"track_id": ' + b"[" * 1900 + b"]" * 1900 + b"}", []),
        "two Origins": (
            json.dumps({"track_id": longest[0], "tag": "piano", "verdict": "yes"}).encode(),
            [("Origin", f"http://127.0.0.1:{port}"), ("Origin", "http://evil.example")],
        ),
    }
    for name, (body, extra) in cases.items():
        status, answer = _request(server, "POST", "/api/labels", _write_headers(server, token, *extra), body)
        assert status == 400, (name, answer)
    for target, headers in (
        ("/api/tracks", [host, ("Host", "evil.example")]),
        ("/api/tracks", [host, ("Origin", f"http://127.0.0.1:{port}"), ("Origin", "http://evil.example")]),
        ("http://evil.example/api/tracks", [host]),
        (f"http://127.0.0.1:{port}/api/tracks", [host]),
    ):
        status, answer = _request(server, "GET", target, [*headers, ("Connection", "close")])
        assert status == 400, (target, headers, answer)
    assert server.curation.store.decisions() == []  # nothing refused was written
    assert [entry for entry in server.seen if entry[2] == 500] == []
    assert _request(server, "GET", "/api/tracks", [host, ("Connection", "close")])[0] == 200


def test_a_fifo_in_the_explorers_labels_folder_is_a_400_not_a_hung_request(explorer_site):
    server, _ = explorer_site
    host = [("Host", f"127.0.0.1:{server.server_address[1]}"), ("Connection", "close")]
    fifo = os.path.join(server.curation.store.path, "99999999999999999999-1-planted.json")
    os.mkfifo(fifo)
    try:
        for target in ("/api/labels?track_id=x", "/api/stats", "/api/review?tag=piano"):
            start = time.monotonic()
            status, body = _request(server, "GET", target, host)
            assert (status, body) == (400, {"error": f"{fifo} is not a decision: not a regular file"}), target
            assert time.monotonic() - start < 5
    finally:
        _unblock(fifo)


def _unblock(fifo: str) -> None:
    """Give a reader stuck opening ``fifo`` (the code before the fix) a writer, so it ends."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # ENXIO: nobody has it open for reading
        pass


# --------------------------------------------------------------------------------- gs://


def _featurize_offline(tmp_path, uris, **env):
    """``tagscale featurize`` in a child process with no Google credentials anywhere it looks
    (no key file, an empty gcloud config); ``env`` adds to that. Returns (result, seconds)."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = tmp_path / "catalog.csv"
    path.write_text("track_id,uri\n" + "".join(f"t{i},{uri}\n" for i, uri in enumerate(uris)))
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "STORAGE_EMULATOR", "CLOUDSDK_"))}
    clean.update(HOME=str(home), CLOUDSDK_CONFIG=str(home / "gcloud"), PYTHONPATH=repo, **env)
    argv = [sys.executable, "-m", "infra.cli", "featurize", "--catalog", str(path), "--output", str(tmp_path / "out")]
    start = time.monotonic()
    # Before the fix this ran for minutes (credential retries, then request retries): 90 s is a hang.
    result = subprocess.run(argv, cwd=repo, env=clean, capture_output=True, text=True, timeout=90)
    return result, time.monotonic() - start


@pytest.mark.slow
def test_gs_audio_without_credentials_is_one_line_within_a_minute(tmp_path):
    result, seconds = _featurize_offline(tmp_path, ["gs://tagscale-private/a.wav", "gs://tagscale-private/b.wav"])
    assert result.returncode == 2 and seconds < 60
    assert result.stderr.strip() == (
        "tagscale featurize: error: gs:// cannot be reached (gs://tagscale-private/a.wav): no Google credentials "
        "(set GOOGLE_APPLICATION_CREDENTIALS to a key file or run `gcloud auth application-default login`)"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_gs_audio_with_no_route_to_the_endpoint_is_one_line_within_a_minute(tmp_path):
    from gcs_emulator import free_port

    port = free_port()  # nothing listens there: the endpoint cannot be reached
    result, seconds = _featurize_offline(
        tmp_path, ["/local/a.wav", "gs://tagscale-private/b.wav"], STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{port}"
    )
    assert result.returncode == 2 and seconds < 60
    assert result.stderr.strip() == (
        "tagscale featurize: error: gs:// cannot be reached (gs://tagscale-private/b.wav): "
        f"no network: cannot connect to 127.0.0.1:{port} (Connection refused)"
    )


def test_a_gs_uri_a_worker_meets_unreachable_is_a_dead_letter_at_once(tmp_path, monkeypatch):
    """A gs:// uri past the rows the driver peeks at: the worker asks once, and every such uri
    is then a decode dead letter without Beam's minutes of retries."""
    from gcs_emulator import free_port

    from pipelines.decode import audio
    from pipelines.storage import reach

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(reach, "_answers", {})
    for name in ("a", "b", "c"):
        start = time.monotonic()
        with pytest.raises(audio.DecodeError, match=r"^gs:// cannot be reached: no network: cannot connect to "):
            audio.decode_audio(f"gs://tagscale-private/{name}.wav")
        assert time.monotonic() - start < 15


# ------------------------------------------------------------------- a catalog of missing files


@pytest.mark.slow
def test_a_large_catalog_of_missing_files_shows_progress_within_seconds(tmp_path):
    """300,000 rows whose files are all missing: no track reaches the model, so the model's
    progress never speaks; the catalog reader and the decoder do, every 5 s."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rows = 300_000  # enough to decode for longer than 5 s on a machine several times faster
    path = tmp_path / "catalog.csv"
    with open(path, "w") as handle:
        handle.write("track_id,uri\n")
        handle.writelines(f"trk-{i:07d},{tmp_path}/gone/trk-{i:07d}.mp3\n" for i in range(rows))
    argv = [sys.executable, "-m", "infra.cli", "featurize", "--catalog", str(path), "--output", str(tmp_path / "out")]
    start = time.monotonic()
    process = subprocess.Popen(
        argv,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": repo},
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    seen = []  # (seconds since start, line) of each progress line
    for line in process.stderr:
        if line.startswith("tagscale: "):
            seen.append((time.monotonic() - start, line.strip()))
    process.wait(timeout=600)
    assert process.returncode == 0
    assert seen, "no progress line"
    # Measured on a shared 2-core machine: the first line 14 s after start (about 10 of them
    # importing TensorFlow and Beam and building the pipeline), then every 5 s; the whole run
    # 40 s. Before, no line came at all.
    assert seen[0][0] < 60, seen[0]
    assert seen[-1][1].startswith(f"tagscale: decode: {rows} failed")
    assert all(later - earlier < 30 for (earlier, _), (later, _) in zip(seen, seen[1:])), seen
