"""explore: the JSON API against a real server on 127.0.0.1, over tag runs written in the pipeline's schema."""

import json
import os
import pathlib
import re
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request

import numpy as np
import pyarrow
import pyarrow.parquet as pq
import pytest
from explore_run import TAGS, write_run, write_thresholds

from runfolder.schema import TAGS_SCHEMA
from runtime.errors import TagscaleError

REPO = pathlib.Path(__file__).resolve().parents[1]
OPENED: list[str] = []  # files opened by Python code while RECORDING is set (see the audit hook)
RECORDING = []


def _audit(event, args):
    if RECORDING and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("explore")
    a = write_run(root / "run-mtt")
    b = write_run(root / "run-spec", tracks=10, model=("spectrogram", "2"), seed=1)
    thresholds = write_thresholds(root / "thresholds.json", {"piano": 0.6, "drums": 0.3, "unknown-tag": 0.5})
    (root / "run-mtt" / "audio" / "secret.wav").write_bytes(b"RIFF not listed in the run")
    return {"root": root, "a": a, "b": b, "thresholds": str(thresholds)}


@pytest.fixture(scope="module")
def server(runs):
    from infra.explore.query import Explorer
    from infra.explore.server import ExplorerServer

    explorer = Explorer.open([str(runs["root"] / "run-mtt"), str(runs["root"] / "run-spec")], runs["thresholds"])
    httpd = ExplorerServer(explorer, "127.0.0.1", 0, quiet=True)
    httpd.start()
    yield httpd
    httpd.stop()
    explorer.close()


def fetch(server, path, headers=None, method="GET"):
    request = urllib.request.Request(server.url.rstrip("/") + path, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def get_json(server, path):
    status, _, body = fetch(server, path)
    assert status == 200, body
    return json.loads(body)


def expected_order(runs, tag, minimum, names=("run-mtt", "run-spec")):
    """(run, track_id, score) highest first; ties in run order, then file order."""
    rows = []
    for run_index, key in enumerate(("a", "b")):
        for row, (track_id, scores) in enumerate(runs[key]["scores"].items()):
            if scores[tag] >= minimum:
                rows.append((-scores[tag], run_index, row, names[run_index], track_id))
    return [(name, track_id, -negative) for negative, _, _, name, track_id in sorted(rows)]


def this_machines_other_address() -> str | None:
    """The address this machine would send from to a non-local network (no packet is sent), or
    None where it has only loopback."""
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("198.51.100.1", 9))  # TEST-NET-2: routed like any outside address
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_the_command_lines_default_server_listens_on_loopback_only(runs):
    """Built as `tagscale explore` builds it without --host: reachable on 127.0.0.1, refused on the
    machine's other address (the app has no login)."""
    import socket

    from infra.explore.query import Explorer
    from infra.explore.server import ExplorerServer, build_parser

    args = build_parser().parse_args(["--tags", str(runs["root"] / "run-mtt"), "--port", "0"])
    explorer = Explorer.open(args.tags)
    httpd = ExplorerServer(explorer, args.host, args.port, quiet=True)
    httpd.start()
    try:
        port = httpd.server_address[1]
        assert get_json(httpd, "/api/stats")["tracks"] == 30
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
        other = this_machines_other_address()
        if other is not None:
            with pytest.raises(OSError):  # refused (or dropped): nothing listens there
                socket.create_connection((other, port), timeout=10).close()
    finally:
        httpd.stop()
        explorer.close()


def test_tracks_by_tag_sorted_by_score_with_total(server, runs):
    body = get_json(server, "/api/tracks?tag=piano&min=0.5&limit=20&offset=0")
    want = expected_order(runs, "piano", 0.5)
    assert body["total"] == len(want) == 20
    got = [(t["run"], t["track_id"], t["score"]) for t in body["tracks"]]
    assert got == [(run, track, pytest.approx(score, abs=1e-6)) for run, track, score in want[:20]]
    first = body["tracks"][0]
    assert {"track_id", "uri", "score"} <= set(first) and first["uri"] == runs["a"]["uris"][first["track_id"]]
    assert [t["tag"] for t in first["top_tags"]][:1] == [
        max(runs["a"]["scores"][first["track_id"]].items(), key=lambda kv: kv[1])[0]
    ]


def test_pages_tile_the_full_list_and_search_narrows_it(server, runs):
    whole = get_json(server, "/api/tracks?tag=drums&min=0&limit=500")["tracks"]
    pages = [
        get_json(server, f"/api/tracks?tag=drums&min=0&limit=7&offset={offset}")["tracks"] for offset in range(0, 42, 7)
    ]
    assert [t["track_id"] for page in pages for t in page] == [t["track_id"] for t in whole]
    assert len(whole) == 40
    found = get_json(server, "/api/tracks?tag=drums&min=0&q=TRK-00")
    assert found["total"] == 10 + 10 and all(t["track_id"].startswith("trk-00") for t in found["tracks"])


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("minimum", [0.0, 0.5])
@pytest.mark.parametrize("run", ["", "run-mtt", "run-spec"])
def test_every_page_of_every_filter_matches_the_scores(server, runs, tag, minimum, run):
    """One run pages by rank ranges, several runs merge; both must give the order the scores say."""
    want = [(r, t) for r, t, _ in expected_order(runs, tag, minimum) if run in ("", r)]
    got, total = [], None
    for offset in range(0, len(want) + 9, 9):
        body = get_json(server, f"/api/tracks?tag={tag}&min={minimum}&limit=9&offset={offset}&run={run}")
        got += [(t["run"], t["track_id"]) for t in body["tracks"]]
        assert total in (None, body["total"])
        total = body["total"]
    assert got == want and total == len(want)
    searched = get_json(server, f"/api/tracks?tag={tag}&min={minimum}&limit=500&q=trk-0&run={run}")
    assert [(t["run"], t["track_id"]) for t in searched["tracks"]] == [w for w in want if w[1].startswith("trk-0")]


def test_calibrated_threshold_applies_to_the_run_of_its_model(server, runs):
    body = get_json(server, "/api/tracks?tag=piano&min=calibrated&limit=100")
    want = [(r, t, s) for r, t, s in expected_order(runs, "piano", 0.6) if r == "run-mtt"]
    assert [(t["run"], t["track_id"]) for t in body["tracks"]] == [(r, t) for r, t, _ in want]
    assert body["total"] == len(want) > 0
    status, _, message = fetch(server, "/api/tracks?tag=guitar&min=calibrated")
    assert status == 400 and b"no calibrated threshold" in message


def test_track_has_every_tag_score_and_its_metadata(server, runs):
    body = get_json(server, "/api/tracks/trk-003")
    assert body["uri"] == runs["a"]["uris"]["trk-003"] and body["duration_s"] == 1.5
    assert [run["run"] for run in body["runs"]] == ["run-mtt", "run-spec"]
    assert body["runs"][0]["model"] == {"name": "musicnn-mtt", "version": "1"} and body["runs"][0]["n_patches"] == 1
    for run, key in zip(body["runs"], "ab"):
        assert {s["tag"]: s["score"] for s in run["scores"]} == pytest.approx(runs[key]["scores"]["trk-003"], abs=1e-6)
    assert len(body["scores"]) == 2 * len(TAGS)
    assert {s["tag"]: s["threshold"] for s in body["runs"][0]["scores"]}["piano"] == 0.6
    assert fetch(server, "/api/tracks/nope")[0] == 404


def test_similar_tracks_are_the_nearest_embeddings(server, runs):
    body = get_json(server, "/api/tracks/trk-004/similar")
    table = pq.read_table(sorted((runs["root"] / "run-mtt" / "tags").glob("*.parquet")))
    ids = table.column("track_id").to_pylist()
    vectors = np.asarray(table.column("embedding").to_pylist())
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = unit @ unit[ids.index("trk-004")]
    want = [ids[i] for i in np.argsort(-cosine) if ids[i] != "trk-004"][:10]
    assert [entry["track_id"] for entry in body] == want
    assert body[0]["similarity"] == pytest.approx(float(np.sort(cosine)[-2]), abs=1e-5)
    assert fetch(server, "/api/tracks/nope/similar")[0] == 404


def test_audio_streams_the_file_and_answers_ranges(server, runs):
    path = pathlib.Path(runs["a"]["uris"]["trk-005"])
    data = path.read_bytes()
    status, headers, body = fetch(server, "/api/tracks/trk-005/audio")
    assert (
        status == 200
        and body == data
        and headers["Accept-Ranges"] == "bytes"
        and headers["Content-Type"] == "audio/wav"
    )
    status, headers, body = fetch(server, "/api/tracks/trk-005/audio", {"Range": "bytes=100-1123"})
    assert status == 206 and body == data[100:1124] and headers["Content-Range"] == f"bytes 100-1123/{len(data)}"
    status, headers, body = fetch(server, "/api/tracks/trk-005/audio", {"Range": "bytes=-500"})
    assert status == 206 and body == data[-500:]
    status, headers, body = fetch(server, "/api/tracks/trk-005/audio", {"Range": f"bytes={len(data) - 10}-"})
    assert status == 206 and body == data[-10:]
    status, headers, _ = fetch(server, "/api/tracks/trk-005/audio", {"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"
    status, headers, body = fetch(server, "/api/tracks/trk-005/audio", method="HEAD")
    assert status == 200 and int(headers["Content-Length"]) == len(data) and body == b""


@pytest.mark.parametrize(
    "track_id",
    [
        "not-a-track",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "secret",
        "secret.wav",
        "audio%2Fsecret.wav",
        "trk-005%2F..%2Fsecret.wav",
        "..",
        "%2E%2E",
    ],
)
def test_audio_serves_only_uris_listed_in_the_run(server, runs, track_id):
    OPENED.clear()
    RECORDING.append(True)
    try:
        status, _, body = fetch(server, f"/api/tracks/{track_id}/audio", {"Range": "bytes=0-"})
    finally:
        RECORDING.clear()
    assert status == 404 and b"RIFF" not in body
    assert OPENED == []  # nothing was opened, not even to check it exists


def test_the_open_detector_sees_a_served_file(server, runs):
    """The check above is only worth something if serving a listed track does show up."""
    OPENED.clear()
    RECORDING.append(True)
    try:
        status, _, _ = fetch(server, "/api/tracks/trk-005/audio", {"Range": "bytes=0-9"})
    finally:
        RECORDING.clear()
    assert status == 206 and OPENED == [runs["a"]["uris"]["trk-005"]]


def test_paths_outside_the_api_are_not_found(server):
    for path in (
        "/static/../explore.py",
        "/static/%2E%2E/explore.py",
        "/../../etc/passwd",
        "/api/tracks/trk-001/other",
        "/api/x",
    ):
        status, _, body = fetch(server, path)
        assert status == 404 and b"import" not in body, path


def test_stats_count_tags_histograms_and_dead_letters(server, runs):
    stats = get_json(server, "/api/stats")
    assert stats["tracks"] == 40 and stats["dead_letters"] == 8 and len(stats["bins"]) == 21
    first = stats["runs"][0]
    by_tag = {entry["tag"]: entry for entry in first["tags"]}
    for tag in TAGS:
        values = np.array([scores[tag] for scores in runs["a"]["scores"].values()], dtype=np.float32)
        assert by_tag[tag]["tracks_above_0_5"] == int((values > 0.5).sum())
        assert by_tag[tag]["histogram"] == np.histogram(np.minimum(values, 0.999), bins=20, range=(0, 1))[0].tolist()
    assert by_tag["piano"]["tracks_above_threshold"] == int(
        sum(s["piano"] >= 0.6 for s in runs["a"]["scores"].values())
    )
    assert {(d["stage"], d["reason"], d["count"]) for d in first["dead_letters"]} == {
        ("decode", "file not found: ...", 2),
        ("decode", "ffmpeg failed: Invalid data found", 1),
        ("catalog", "row N: track_id is empty", 1),
    }
    assert stats["runs"][1]["tags"][0]["threshold"] is None  # another model: the thresholds do not apply


def test_csv_export_of_the_current_filter(server, runs):
    status, headers, body = fetch(server, "/api/tracks.csv?tag=drums&min=0.8&q=trk-0")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    lines = body.decode().splitlines()
    want = [(r, t) for r, t, _ in expected_order(runs, "drums", 0.8)]
    assert lines[0] == "run,track_id,uri,tag,score,duration_s,model"
    assert [tuple(line.split(",")[:2]) for line in lines[1:]] == want
    assert get_json(server, "/api/tracks?tag=drums&min=0.8")["total"] == len(want)


def test_csv_batches_join_into_the_same_rows(server):
    small = [row for batch in server.explorer.csv_rows("drums", 0, batch=7) for row in batch]
    whole = [row for batch in server.explorer.csv_rows("drums", 0) for row in batch]
    assert small == whole and len(whole) == 1 + 40 and {row[0] for row in whole[1:]} == {"run-mtt", "run-spec"}


@pytest.mark.parametrize(
    "query",
    ["tag=piano&min=abc", "tag=piano&limit=0", "tag=piano&limit=x", "tag=violin", "tag=piano&offset=-1", "run=nope"],
)
def test_bad_parameters_are_400_with_a_message(server, query):
    status, _, body = fetch(server, f"/api/tracks?{query}")
    assert status == 400 and json.loads(body)["error"]


def test_static_assets_ship_in_the_package_and_load_nothing_from_outside(server):
    for path, kind in (("/", "text/html"), ("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")):
        status, headers, body = fetch(server, path)
        text = body.decode()
        assert status == 200 and headers["Content-Type"].startswith(kind)
        external = [url for url in re.findall(r"https?://[^\s\"')]+", text) if url != "http://www.w3.org/2000/svg"]
        external += re.findall(r"(?:src|href|url)\s*[=(]\s*[\"']?//", text)  # protocol-relative
        assert external == [], external
    subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(server.explorer.runs[0].source) + "/../dist"],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    (sdist,) = pathlib.Path(server.explorer.runs[0].source, "..", "dist").glob("tagscale-*.tar.gz")
    names = tarfile.open(sdist).getnames()
    for asset in ("index.html", "app.js", "style.css"):
        assert any(name.endswith(f"infra/explore/static/{asset}") for name in names), asset
    setup_text = (REPO / "setup.py").read_text()
    assert '"infra.explore": ["static/*"]' in setup_text  # package_data: installed wheels carry the assets too


def test_gcs_run_with_gcs_audio_is_proxied(tmp_path):
    from gcs_emulator import running_emulator

    from infra.explore.query import Explorer
    from infra.explore.server import ExplorerServer

    local = tmp_path / "run"
    made = write_run(local, tracks=6, audio_root="gs://explore-test/audio")
    with running_emulator("explore-test") as client:
        bucket = client.bucket("explore-test")
        for path in local.rglob("*.*"):
            relative = path.relative_to(local)
            name = f"audio/{path.name}" if relative.parts[0] == "audio" else f"runs/r1/{relative}"
            bucket.blob(name).upload_from_filename(str(path))
        explorer = Explorer.open(["gs://explore-test/runs/r1"])
        httpd = ExplorerServer(explorer, "127.0.0.1", 0, quiet=True)
        httpd.start()
        try:
            body = get_json(httpd, "/api/tracks?tag=calm&min=0&limit=3")
            assert body["total"] == 6 and body["tracks"][0]["uri"].startswith("gs://explore-test/audio/")
            data = (local / "audio" / "trk-002.wav").read_bytes()
            status, headers, chunk = fetch(httpd, "/api/tracks/trk-002/audio", {"Range": "bytes=44-2091"})
            assert status == 206 and chunk == data[44:2092] and headers["Content-Range"] == f"bytes 44-2091/{len(data)}"
            assert get_json(httpd, "/api/stats")["dead_letters"] == 4
            assert made["uris"]["trk-002"] == "gs://explore-test/audio/trk-002.wav"
        finally:
            httpd.stop()
            explorer.close()


def test_command_line_serves_on_loopback_and_reports_bad_input(runs, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "infra.cli",
            "explore",
            "--tags",
            str(runs["root"] / "run-mtt"),
            "--port",
            "0",
            "--quiet",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        url = lines[1].split("open ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/stats", timeout=30) as response:
            assert json.loads(response.read())["tracks"] == 30
    finally:
        process.terminate()
        process.wait(timeout=30)
    result = subprocess.run(
        [sys.executable, "-m", "infra.cli", "explore", "--tags", str(tmp_path / "missing")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"tagscale explore: error: no tag output in {tmp_path / 'missing'}: "
        f"expected {tmp_path / 'missing'}/tags/manifest.json (run `tagscale tag` first)"
    ]


def test_ranks_order_by_score_then_row_with_missing_last():
    from infra.explore.data import ranks

    rng = np.random.default_rng(3)
    values = rng.choice(np.array([0.1, 0.5, 0.9, np.nan, 0.0, -0.0, 1.0, 0.25], dtype=np.float32), 5000)
    values[:100] = rng.random(100, dtype=np.float32)
    want = np.empty(len(values), dtype=np.int32)
    want[np.argsort(-(values + np.float32(0)), kind="stable")] = np.arange(len(values))
    assert ranks(values).tolist() == want.tolist()
    assert ranks(np.array([np.nan, 0.2, 0.2, 0.7], dtype=np.float32)).tolist() == [3, 1, 2, 0]


def test_a_run_with_no_tagged_track_still_shows_its_dead_letters(tmp_path):
    """Every track failed: the tag files are empty, the summary still counts the failures."""
    from infra.explore.query import Explorer

    write_run(tmp_path / "run", tracks=4)
    for path in (tmp_path / "run" / "tags").glob("*.parquet"):
        pq.write_table(TAGS_SCHEMA.empty_table(), path)
    explorer = Explorer.open([str(tmp_path / "run")])
    try:
        assert explorer.tracks("piano" if "piano" in explorer.runs[0].tags else None) == {"tracks": [], "total": 0}
        assert explorer.stats()["dead_letters"] == 4 and explorer.stats()["tracks"] == 0
        assert explorer.track("trk-000") is None and explorer.audio_uri("trk-000") is None
    finally:
        explorer.close()
    pq.write_table(
        pyarrow.table({"track_id": ["a"], "scores": [[{"tag": "x", "score": 0.5}]]}),
        tmp_path / "run" / "tags" / "other.parquet",
    )
    with pytest.raises(TagscaleError, match="other.parquet is not tag output"):
        Explorer.open([str(tmp_path / "run")])
