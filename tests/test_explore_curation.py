"""explore --labels: guarded writes, labels read back, the review queue, agreement counts, the
curator's loop (label -> probe train -> probe apply -> explore both runs -> diff), and the
same in headless Chromium."""

import hashlib
import json
import os
import pathlib

import numpy as np
import pytest
from chromium import browser, no_console_errors, open_view, wait  # noqa: F401 (browser: a fixture)
from explore_http import call, post, write_headers
from explore_run import write_run, write_thresholds

from infra.cli import main as cli
from tagruns import labels, tagdata

THRESHOLDS = {"piano": 0.6, "drums": 0.3}  # the other tags are taken as present above 0.5


def serve(root: pathlib.Path, labels_dir: str | None, runs=("run",)):
    from infra.explore.query import Explorer
    from infra.explore.server import ExplorerServer

    explorer = Explorer.open([str(root / run) for run in runs], str(root / "thresholds.json"))
    httpd = ExplorerServer(explorer, "127.0.0.1", 0, quiet=True, labels=labels_dir)
    httpd.start()
    return httpd


@pytest.fixture
def site(tmp_path):
    """A 30-track run, its thresholds, and a server writing decisions to ``labels``."""
    truth = write_run(tmp_path / "run")
    write_thresholds(tmp_path / "thresholds.json", THRESHOLDS)
    httpd = serve(tmp_path, str(tmp_path / "labels"))
    yield {"server": httpd, "root": tmp_path, "scores": truth["scores"], "labels": str(tmp_path / "labels")}
    httpd.stop()
    httpd.explorer.close()


def run_bytes(root: pathlib.Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / "run" / "tags").iterdir())}


def written(site) -> list[str]:
    folder = os.path.join(site["labels"], labels.DECISIONS)
    return os.listdir(folder) if os.path.isdir(folder) else []


def test_writes_without_the_token_or_from_elsewhere_are_refused_and_write_nothing(site):
    server, before = site["server"], run_bytes(site["root"])
    port = server.server_address[1]
    body = {"track_id": "trk-001", "tag": "piano", "verdict": "no"}
    good = write_headers(server)
    refused = [
        ({"Content-Type": "application/json"}, None, 403),  # no token
        ({**good, "X-Tagscale-Token": good["X-Tagscale-Token"][:-1] + "x"}, None, 403),  # a wrong one
        ({**good, "Origin": "http://evil.example.com"}, None, 403),
        ({**good, "Origin": f"http://127.0.0.1:{port + 1}"}, None, 403),
        ({**good, "Origin": "null"}, None, 403),  # a sandboxed frame
        ({**good, "Origin": f"https://127.0.0.1:{port}"}, None, 403),
        (good, f"evil.example.com:{port}", 421),  # DNS rebinding: a page of another name
        ({**good, "Content-Type": "text/plain"}, None, 415),  # what a cross-site form can send
    ]
    for headers, host, status in refused:
        answer = call(server, "/api/labels", body, headers=headers, host=host)
        assert answer[0] == status and "error" in answer[1], (headers, host, answer)
        assert written(site) == []
    assert call(server, "/api/labels", b"{" + b" " * 5000 + b"}", headers=good)[0] == 413
    # GET never writes, whatever it carries.
    assert call(server, "/api/labels?track_id=trk-001&tag=piano&verdict=no", headers=good)[1] == {"labels": []}
    assert written(site) == []
    for origin in (None, f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
        headers = good if origin is None else {**good, "Origin": origin}
        status, record = call(server, "/api/labels", body, headers=headers)
        assert status == 201 and record["verdict"] == "no" and record["run"] == str(site["root"] / "run")
    assert len(written(site)) == 3
    assert call(server, "/api/labels?track_id=trk-001")[1]["labels"] == [record]
    assert run_bytes(site["root"]) == before


def test_bad_decisions_are_400_and_new_tag_names_are_allowed(site):
    server = site["server"]
    headers = write_headers(server)
    for body in (
        {"track_id": "no-such-track", "tag": "piano", "verdict": "yes"},
        {"track_id": "trk-001", "tag": "pi\u0000ano", "verdict": "yes"},
        {"track_id": "trk-001", "tag": "x" * 101, "verdict": "yes"},
        {"track_id": "trk-001", "tag": "piano", "verdict": "maybe"},
        ["trk-001", "piano", "yes"],
    ):
        assert call(server, "/api/labels", body, headers=headers)[0] == 400
    assert call(server, "/api/labels", b"not json", headers=headers)[0] == 400
    assert written(site) == []
    post(site["server"], "trk-002", "bass", "yes")  # a tag the run lacks
    post(site["server"], "trk-002", "piano", "yes")
    post(site["server"], "trk-002", "piano", "no")
    found = call(server, "/api/labels?track_id=trk-002")[1]["labels"]
    assert [(r["tag"], r["verdict"], r["model"]) for r in found] == [
        ("bass", "yes", {"name": "musicnn-mtt", "version": "1"}),
        ("piano", "no", {"name": "musicnn-mtt", "version": "1"}),
    ]


def test_without_labels_there_is_nothing_to_write_to(tmp_path):
    write_run(tmp_path / "run", tracks=6)
    write_thresholds(tmp_path / "thresholds.json", THRESHOLDS)
    server = serve(tmp_path, None)
    try:
        status, session = call(server, "/api/session")
        assert status == 200 and session["labels"] is False
        headers = {"Content-Type": "application/json", "X-Tagscale-Token": session["token"]}
        body = {"track_id": "trk-001", "tag": "piano", "verdict": "no"}
        assert call(server, "/api/labels", body, headers=headers)[0] == 404
        assert "labels" not in call(server, "/api/stats")[1]["runs"][0]["tags"][0]
    finally:
        server.stop()
        server.explorer.close()
    assert sorted(os.listdir(tmp_path)) == ["run", "thresholds.json"]


def test_the_review_queue_is_the_unlabelled_tracks_closest_to_the_threshold(site):
    server, scores = site["server"], site["scores"]
    for tag, threshold in (("piano", 0.6), ("vocal", 0.5)):
        expected = sorted(scores, key=lambda t: (abs(scores[t][tag] - threshold), t))
        status, queue = call(server, f"/api/review?tag={tag}&limit=8")
        assert status == 200 and [t["track_id"] for t in queue["tracks"]] == expected[:8]
        assert {t["threshold"] for t in queue["tracks"]} == {threshold}
    first, second = [t["track_id"] for t in call(server, "/api/review?tag=piano&limit=2")[1]["tracks"]]
    post(server, first, "piano", "yes")
    post(server, second, "drums", "yes")  # labelled for another tag: still in piano's queue
    queue = [t["track_id"] for t in call(server, "/api/review?tag=piano&limit=30")[1]["tracks"]]
    assert first not in queue and queue[0] == second and len(queue) == 29
    assert call(server, "/api/review?tag=nope")[0] == 400


def test_the_summary_counts_decisions_agreeing_with_the_model(site):
    server, scores = site["server"], site["scores"]
    above = [t for t in sorted(scores) if scores[t]["piano"] >= 0.6]
    # Highest first: the first one (0.5) is "present" at 0.5 but not at the calibrated 0.6.
    below = sorted((t for t in scores if scores[t]["piano"] < 0.6), key=lambda t: (-scores[t]["piano"], t))
    vocal_above = [t for t in sorted(scores) if scores[t]["vocal"] >= 0.5]
    nothing_yet = call(server, "/api/stats")[1]["runs"][0]["tags"]
    assert {tag["tag"]: tag["labels"]["decisions"] for tag in nothing_yet} == dict.fromkeys(THRESHOLDS, 0) | {
        "guitar": 0,
        "vocal": 0,
        "calm": 0,
    }
    post(server, above[0], "piano", "yes")  # agrees
    post(server, above[1], "piano", "no")  # disagrees
    post(server, below[0], "piano", "no")  # agrees
    post(server, below[-1], "piano", "no")
    post(server, below[-1], "piano", "yes")  # changed its mind: disagrees now
    post(server, vocal_above[0], "vocal", "yes")  # at 0.5 (no calibrated threshold): agrees
    post(server, above[0], "bass", "yes")  # a tag the run lacks: counted nowhere
    tags = {tag["tag"]: tag["labels"] for tag in call(server, "/api/stats")[1]["runs"][0]["tags"]}
    assert tags["piano"] == {"decisions": 4, "agree": 2}
    assert tags["vocal"] == {"decisions": 1, "agree": 1}
    assert tags["drums"] == {"decisions": 0, "agree": 0} and "bass" not in tags


def test_the_curators_loop_label_probe_apply_explore_both_diff(site, capsys):
    """Label by hand, train a probe on the labels, apply it, open both runs, diff them."""
    server, root = site["server"], site["root"]
    before = run_bytes(root)
    table = tagdata.load(str(root / "run"))
    for track_id, embedding in zip(table.track_ids, table.embeddings):
        post(server, track_id, "piano", "yes" if embedding[0] > 0 else "no")
        post(server, track_id, "bass", "yes" if embedding[1] > 0 else "no")
    assert run_bytes(root) == before
    probe_dir, new = root / "probe", root / "run-probed"
    train = ["probe", "train", "--tags", str(root / "run"), "--labels", site["labels"], "--output", str(probe_dir)]
    assert cli(train) == 0, capsys.readouterr().err
    probe = json.loads((probe_dir / "probe.json").read_text())
    assert sorted(probe["tags"]) == ["bass", "piano"] and probe["labelled_tracks"] == 30
    assert probe["tags"]["bass"]["positives"] == int((table.embeddings[:, 1] > 0).sum())
    assert cli(["probe", "apply", "--tags", str(root / "run"), "--probe", str(probe_dir), "--output", str(new)]) == 0
    both = serve(root, None, runs=("run", "run-probed"))
    try:
        track = call(both, "/api/tracks/trk-000")[1]
        assert [r["run"] for r in track["runs"]] == ["run", "run-probed"]
        new_scores = {s["tag"]: s["score"] for s in track["runs"][1]["scores"]}
        assert set(new_scores) == {"bass", "piano"}
        # The probe learned the labels: its scores sort the labelled tracks as the curator did.
        bass = call(both, "/api/tracks?tag=bass&min=0.5&run=run-probed&limit=30")[1]["tracks"]
        positives = {t for t, e in zip(table.track_ids, table.embeddings) if e[1] > 0}
        assert len({t["track_id"] for t in bass} & positives) >= 0.8 * len(positives)
    finally:
        both.stop()
        both.explorer.close()
    capsys.readouterr()
    assert cli(["diff", "--tags", str(root / "run"), "--tags", str(new), "--output", str(root / "diff")]) == 1
    assert "largest mean shift piano" in capsys.readouterr().out
    assert "piano" in (root / "diff" / "report.md").read_text()
    assert run_bytes(root) == before


# ------------------------------------------------------------------ in a browser


def labels_on_page(driver) -> dict:
    """The verdict each tag shows on its row (a run's score row, or a row of its own)."""
    return {
        row.get_attribute("data-tag"): row.find_element("css selector", "td.verdict").text
        for row in driver.find_elements("css selector", "tr.label-row")
    }


def test_in_a_browser_reject_add_reload_and_open_the_review_desk(browser, site, tmp_path):  # noqa: F811
    from selenium.webdriver.support.ui import Select

    server, before = site["server"], run_bytes(site["root"])
    open_view(browser, server, "#/track/trk-003")
    assert labels_on_page(browser)["piano"] == "—"
    browser.find_element("css selector", 'tr.label-row[data-tag="piano"] button.label-no').click()
    wait(browser, lambda d: labels_on_page(d).get("piano") == "no", "the rejection did not show")
    open_view(browser, server, "#/track/trk-004")
    browser.find_element("id", "label-new").send_keys("bass")
    browser.find_element("id", "label-add").click()
    wait(browser, lambda d: labels_on_page(d).get("bass") == "yes", "the added tag did not show")
    browser.refresh()
    wait(browser, lambda d: labels_on_page(d).get("bass") == "yes", "after a reload the added tag is gone")
    open_view(browser, server, "#/track/trk-003")
    assert labels_on_page(browser)["piano"] == "no" and "bass" not in labels_on_page(browser)
    browser.save_screenshot(str(tmp_path / "labels.png"))
    assert [(r["tag"], r["verdict"]) for r in call(server, "/api/labels?track_id=trk-004")[1]["labels"]] == [
        ("bass", "yes")
    ]
    # The review desk of piano: trk-003 is labelled now, the rest closest to 0.6 first.
    Select(browser.find_element("id", "review-tag")).select_by_value("piano")
    expected = [t["track_id"] for t in call(server, "/api/review?tag=piano&limit=10")[1]["tracks"]]
    scores = site["scores"]
    assert (
        expected == sorted((t for t in scores if t != "trk-003"), key=lambda t: (abs(scores[t]["piano"] - 0.6), t))[:10]
    )
    browser.find_element("id", "review-link").click()
    wait(browser, lambda d: d.execute_script("return document.body.dataset.ready") == "#/review?tag=piano", "")
    assert browser.find_element("id", "review-question").get_attribute("data-review-track") == expected[0]
    open_view(browser, server, "#/summary")
    cells = [c.text for c in browser.find_elements("css selector", "table.tag-stats td.agreement")]
    assert "1 of 1" in cells  # trk-003's piano score is below 0.6: the model agrees with the "no"
    decisions = {
        r.get_attribute("data-tag"): r.find_element("css selector", "td.decisions").text
        for r in browser.find_elements("css selector", "#label-summary tr[data-tag]")
    }
    assert decisions == {"bass": "1 (1 yes, 0 no)", "piano": "1 (0 yes, 1 no)"}
    assert browser.find_elements("css selector", "svg.curve") == []  # no --probe, no learning curves
    assert run_bytes(site["root"]) == before
    no_console_errors(browser)


def test_in_a_browser_without_labels_there_are_no_buttons(browser, tmp_path):  # noqa: F811
    write_run(tmp_path / "run", tracks=6)
    write_thresholds(tmp_path / "thresholds.json", THRESHOLDS)
    server = serve(tmp_path, None)
    try:
        open_view(browser, server, "#/track/trk-001")
        assert browser.find_elements("css selector", "#labels, #review, button.label-no, td.verdict") == []
        open_view(browser, server, "#/summary")
        assert browser.find_elements("css selector", "td.agreement, #label-summary") == []
        open_view(browser, server, "#/?tag=piano")
        assert browser.find_elements("id", "review-link") == []
        open_view(browser, server, "#/review?tag=piano")  # the desk stores decisions: it says what it needs
        assert "--labels DIR" in browser.find_element("id", "error").text
        no_console_errors(browser)
    finally:
        server.stop()
        server.explorer.close()
    assert np.array_equal(sorted(os.listdir(tmp_path)), ["run", "thresholds.json"])


def test_a_labels_folder_inside_the_run_or_a_file_is_one_line(tmp_path, capsys):
    write_run(tmp_path / "run", tracks=4)
    (tmp_path / "a-file").write_text("x")
    for folder, words in ((tmp_path / "run" / "labels", "inside the tag run"), (tmp_path / "a-file", "is a file")):
        assert cli(["explore", "--tags", str(tmp_path / "run"), "--labels", str(folder), "--port", "0"]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err
    assert not (tmp_path / "run" / "labels").exists()
