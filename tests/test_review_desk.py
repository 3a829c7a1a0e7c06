"""The curator's review desk (#/review?tag=T) and the loop it feeds, in headless Chromium: answer
by keyboard alone, undo, skip, then probe train (report.json) -> probe apply -> explore both runs.
Also the Track page's yes/no on the score rows within 1280 px, and the endpoints the desk and the
Summary read. Chromium, chromedriver and the helpers as test_explore_browser."""

import json
import os
import statistics
from urllib.parse import parse_qs, urlsplit

import pytest
from chromium import browser, no_console_errors, open_view, wait  # noqa: F401 (browser: a fixture)
from explore_http import call, post, record_requests
from explore_run import add_segments, write_run, write_thresholds

from infra.cli import main as cli
from tagruns import labels

SECONDS = 10.0  # three segments per track: 0, 2.992 and 5.984 s
TRACKS = 40
THRESHOLD = 0.6  # piano's calibrated threshold


def serve(root, labels_dir, runs=("run",), *, probe=None):
    """A server over ``root/<run>`` for each of ``runs`` with ``root/thresholds.json``."""
    from infra.explore.query import Explorer
    from infra.explore.server import ExplorerServer

    explorer = Explorer.open([str(root / run) for run in runs], str(root / "thresholds.json"))
    httpd = ExplorerServer(explorer, "127.0.0.1", 0, quiet=True, labels=labels_dir, probe=probe)
    record_requests(httpd)
    httpd.start()
    return httpd


@pytest.fixture
def desk_site(tmp_path):
    """A 40-track run tagged with segments, piano's threshold, and a server writing ``labels``."""
    truth = write_run(tmp_path / "run", tracks=TRACKS, seconds=SECONDS)
    rows = add_segments(tmp_path / "run", SECONDS)
    write_thresholds(tmp_path / "thresholds.json", {"piano": THRESHOLD})
    httpd = serve(tmp_path, str(tmp_path / "labels"))
    yield {"server": httpd, "root": tmp_path, "scores": truth["scores"], "segments": rows}
    httpd.stop()
    httpd.explorer.close()


def shown(driver) -> str:
    return driver.find_element("css selector", "[data-review-track]").get_attribute("data-review-track")


def press(driver, key: str, then: str) -> None:
    """One key to the page (the focused body, as a curator types), then wait for question ``then``."""
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()
    wait(driver, lambda d: shown(d) == then, f"after {key!r} the desk does not show {then}")


PLAYER = "document.getElementById('review-player')"


def best_start(rows) -> float:
    """The start of the segment where piano scores highest (the first of equals)."""
    scores = [next(s["score"] for s in row["scores"] if s["tag"] == "piano") for row in rows]
    return rows[scores.index(max(scores))]["start_s"]


# Each key's time to the next question, in the page: from the keydown event's timestamp to the
# first frame drawn after the question's element changed. Installed before the page's own scripts
# (so its keydown listener runs first, and the change it sees is the one that key made).
MEASURE = """
window.keyToQuestion = []; let pressed = null;
window.addEventListener("keydown", (event) => { pressed = event.timeStamp; }, true);
new MutationObserver(() => {
  if (pressed === null) return;
  const start = pressed; pressed = null;
  requestAnimationFrame(() => window.keyToQuestion.push(performance.now() - start));
}).observe(document, {attributes: true, subtree: true, attributeFilter: ["data-review-track"]});
"""


def test_the_desk_by_keyboard_then_probe_train_apply_and_explore_both(browser, desk_site, tmp_path, capsys):  # noqa: F811
    server, root, scores = desk_site["server"], desk_site["root"], desk_site["scores"]
    order = [t["track_id"] for t in call(server, f"/api/review?tag=piano&limit={TRACKS}")[1]["tracks"]]
    assert order == sorted(scores, key=lambda t: (abs(scores[t]["piano"] - THRESHOLD), t))  # no ties
    script = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": MEASURE})
    open_view(browser, server, "#/review?tag=piano")
    assert shown(browser) == order[0]
    assert browser.find_element("id", "review-counter").text == f"0 decided, {TRACKS} left"
    # The question: the track, its score and threshold, and piano's row over its three segments.
    card = browser.find_element("id", "review-question").text
    assert order[0] in card and f"{scores[order[0]]['piano']:.3f}, threshold {THRESHOLD:.3f}" in card
    wait(browser, lambda d: d.find_element("id", "heatmap").get_attribute("data-ready") == "1", "no heatmap")
    columns = browser.find_elements("css selector", "#heatmap .heat-col")
    assert len(columns) == 3 and all(len(c.find_elements("css selector", "div")) == 1 for c in columns)
    # The player is cued at the segment where piano scores highest.
    best = {"start_s": best_start(desk_site["segments"][order[0]])}
    wait(
        browser,
        lambda d: (
            d.execute_script("const a = document.getElementById('review-player'); return a.readyState >= 1")
            and abs(
                browser.execute_script("return document.getElementById('review-player').currentTime") - best["start_s"]
            )
            < 0.01
        ),
        "the player is not cued at piano's best segment",
    )
    browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})

    # 20 answers, alternating yes / no, with one skip among them (the fourth question).
    expected, skipped = {}, order[3]
    for position, track in enumerate(order[:21]):
        if track == skipped:
            key = "s"
        else:
            key = "y" if len(expected) % 2 == 0 else "n"
            expected[track] = {"y": "yes", "n": "no"}[key]
        press(browser, key, order[position + 1])
    # Undo: the last answer's question comes back, and answering it again corrects it.
    last = order[20]
    assert expected[last] == "no"
    press(browser, "u", last)
    assert "you said no" in browser.find_element("id", "review-question").text
    press(browser, "y", order[21])
    expected[last] = "yes"
    wait(browser, lambda d: d.find_element("id", "review-desk").get_attribute("data-pending") == "0", "writes pending")

    # Stored: 20 answers, the undone one corrected (21 decisions on disk); nothing for the skip.
    store = labels.LabelStore(str(root / "labels"))
    latest = {track: record["verdict"] for (track, tag), record in store.latest().items() if tag == "piano"}
    assert latest == expected and len(store.decisions()) == 21 and skipped not in latest
    agree = sum((scores[t]["piano"] >= THRESHOLD) == (v == "yes") for t, v in expected.items())
    assert browser.find_element("id", "review-counter").text == f"20 decided, {TRACKS - 21} left"
    assert browser.find_element("id", "review-agreement").text == (
        f"agreement so far: {agree} of 20 ({round(100 * agree / 20)}%)"
    )
    # The page fetched its queue twice: 20 questions at first, more once fewer than 10 waited.
    pages = [parse_qs(urlsplit(path).query) for _, path, _ in server.seen if path.startswith("/api/review?")]
    limits = [int(query["limit"][0]) for query in pages]
    assert limits[0] == TRACKS and limits[1] == 20 and len(limits) == 3 and limits[2] > 20, limits
    review = call(server, "/api/review?tag=piano&limit=1")[1]
    assert (review["decided"], review["agree"], review["left"]) == (20, agree, TRACKS - 20)

    # 20 answers, the skip, the undo and the correction (the last one's frame may yet be drawn).
    times = wait(browser, lambda d: d.execute_script("const t = window.keyToQuestion; return t.length === 23 && t"), "")
    median = statistics.median(times)
    print(f"\nkey to next question: median {median:.1f} ms, max {max(times):.1f} ms over {len(times)} keys")
    assert median < 300, times

    # ? shows the keys; space plays from piano's best segment of the question shown.
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).send_keys("?").perform()
    wait(browser, lambda d: d.find_element("id", "review-keys").is_displayed(), "? did not show the keys")
    assert "undo" in browser.find_element("id", "review-keys").text
    browser.save_screenshot(str(tmp_path / "review-desk.png"))
    assert (tmp_path / "review-desk.png").stat().st_size > 10_000
    ActionChains(browser).send_keys("?").perform()
    wait(browser, lambda d: not d.find_element("id", "review-keys").is_displayed(), "? did not hide the keys")
    # A reload asks the skipped track again: it is the unlabelled one closest to the threshold.
    browser.refresh()
    wait(browser, lambda d: shown(d) == skipped, "after a reload the skipped track is not asked again")
    assert browser.find_element("id", "review-counter").text == f"20 decided, {TRACKS - 20} left"
    # Space plays it from piano's best segment; p pauses.
    start = best_start(desk_site["segments"][skipped])
    wait(browser, lambda d: d.execute_script(f"return {PLAYER}.readyState >= 1"), "the player did not load")
    ActionChains(browser).send_keys(" ").perform()
    wait(
        browser,
        lambda d: d.execute_script(f"return !{PLAYER}.paused && {PLAYER}.currentTime > {start}"),
        "space did not play from the best segment",
    )
    ActionChains(browser).send_keys("p").perform()
    wait(browser, lambda d: d.execute_script(f"return {PLAYER}.paused"), "p did not pause")
    assert start < browser.execute_script(f"return {PLAYER}.currentTime") < start + 2.992
    no_console_errors(browser)

    # probe train on the desk's labels: report.json beside the probe.
    probe_dir, new = root / "probe", root / "run-probed"
    argv = ["probe", "train", "--tags", str(root / "run"), "--labels", str(root / "labels"), "--output", str(probe_dir)]
    assert cli(argv) == 0, capsys.readouterr().err
    report = json.loads((probe_dir / "report.json").read_text())
    positives = sum(v == "yes" for v in expected.values())
    assert list(report) == ["tags"] and list(report["tags"]) == ["piano"]
    piano = report["tags"]["piano"]
    assert list(piano) == ["positives", "negatives", "cv_roc_auc", "cv_pr_auc", "learning_curve"]
    assert (piano["positives"], piano["negatives"]) == (positives, 20 - positives)
    assert [p["labels"] for p in piano["learning_curve"]] == [
        round(f * positives) + round(f * (20 - positives)) for f in (0.25, 0.5, 0.75, 1.0)
    ]
    assert all(list(p) == ["labels", "roc_auc", "pr_auc"] for p in piano["learning_curve"])
    assert cli(["probe", "apply", "--tags", str(root / "run"), "--probe", str(probe_dir), "--output", str(new)]) == 0

    # The explorer opens both runs, with the probe's learning curve on the Summary.
    both = serve(root, str(root / "labels"), runs=("run", "run-probed"), probe=str(probe_dir))
    try:
        open_view(browser, both, f"#/track/{order[0]}")
        assert [
            t.get_attribute("data-run") for t in browser.find_elements("css selector", "table.scores[data-run]")
        ] == [
            "run",
            "run-probed",
        ]
        wait(
            browser,
            lambda d: (
                [r.text for r in d.find_elements("css selector", 'tr.label-row[data-tag="piano"] td.verdict')]
                == [expected[order[0]]] * 2
            ),
            "the verdict is not on piano's rows of both runs",
        )
        open_view(browser, both, "#/summary")
        row = browser.find_element("css selector", '#label-summary tr[data-tag="piano"]')
        assert f"20 ({positives} yes, {20 - positives} no)" in row.text
        assert f"{piano['cv_roc_auc']:.3f} / {piano['cv_pr_auc']:.3f}" in row.text
        points = len(piano["learning_curve"])
        assert len(row.find_elements("css selector", "svg.curve circle.roc_auc")) == points
        assert len(row.find_elements("css selector", "svg.curve circle.pr_auc")) == points
        browser.save_screenshot(str(tmp_path / "summary-probe.png"))
        no_console_errors(browser)
    finally:
        both.stop()
        both.explorer.close()


def test_the_track_page_puts_yes_no_on_the_score_rows_and_fits_1280_px(browser, tmp_path):  # noqa: F811
    # A folder name with no break opportunity: its URI once widened the page past the window.
    deep = tmp_path / ("Music_Archive_" + "x_" * 60) / ("Artist_Name_" + "y" * 60)
    deep.mkdir(parents=True)
    write_run(deep / "run", tracks=12)
    write_run(deep / "run2", tracks=12, model=("spectrogram", "2"), seed=1)
    write_thresholds(deep / "thresholds.json", {"piano": THRESHOLD})
    server = serve(deep, str(tmp_path / "labels"), runs=("run", "run2"))
    try:
        assert browser.get_window_size()["width"] == 1280
        open_view(browser, server, "#/track/trk-003")
        assert browser.find_elements("css selector", "table.labels") == []  # no second table of tags
        rows = browser.find_elements("css selector", 'tr.score-row[data-tag="drums"]')
        assert len(rows) == 2 and all(r.find_elements("css selector", "td .bar") for r in rows)
        rows[1].find_element("css selector", "button.label-no").click()
        wait(
            browser,
            lambda d: (
                [c.text for c in d.find_elements("css selector", 'tr[data-tag="drums"] td.verdict')] == ["no"] * 2
            ),
            "the decision does not show on drums' rows",
        )
        assert call(server, "/api/labels?track_id=trk-003")[1]["labels"][0]["run"] == str(deep / "run2")
        browser.find_element("id", "label-new").send_keys("bass")
        browser.find_element("id", "label-add").click()
        wait(
            browser,
            lambda d: (
                [c.text for c in d.find_elements("css selector", '#labels-extra tr[data-tag="bass"] td.verdict')]
                == ["yes"]
            ),
            "the added tag has no row",
        )
        wait(browser, lambda d: d.find_elements("css selector", "#similar a.track-link"), "no similar tracks")
        width = browser.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert width[0] <= width[1], width
        link = browser.find_element("id", "review-link")
        assert link.get_attribute("href").endswith(
            "#/review?tag=" + browser.find_element("id", "review-tag").get_attribute("value")
        )
        open_view(browser, server, "#/?tag=drums")
        assert browser.find_element("id", "review-link").get_attribute("href").endswith("#/review?tag=drums")
        no_console_errors(browser)
    finally:
        server.stop()
        server.explorer.close()


# ------------------------------------------------------------------ what the desk and the Summary read


def test_the_review_queue_counts_what_is_left_decided_and_agreeing(desk_site):
    server, scores = desk_site["server"], desk_site["scores"]
    first = call(server, "/api/review?tag=piano&limit=3")[1]
    assert (first["left"], first["decided"], first["agree"]) == (TRACKS, 0, 0)
    assert all(t["segments"] is True for t in first["tracks"])
    above = next(t for t in sorted(scores) if scores[t]["piano"] >= THRESHOLD)
    below = next(t for t in sorted(scores) if scores[t]["piano"] < THRESHOLD)
    post(server, above, "piano", "yes")  # agrees
    post(server, below, "piano", "yes")  # disagrees
    post(server, below, "drums", "no")  # another tag
    after = call(server, "/api/review?tag=piano&limit=3")[1]
    assert (after["left"], after["decided"], after["agree"]) == (TRACKS - 2, 2, 1)
    assert call(server, "/api/labels/tags")[1] == {
        "tags": [
            {"tag": "drums", "decisions": 1, "yes": 0, "no": 1},
            {"tag": "piano", "decisions": 2, "yes": 2, "no": 0},
        ]
    }
    assert call(server, "/api/probe/report")[0] == 404
    assert call(server, "/api/session")[1]["probe"] is False


def test_a_track_in_two_runs_is_one_question_left(tmp_path):
    scores = write_run(tmp_path / "run", tracks=TRACKS)["scores"]
    write_run(tmp_path / "run2", tracks=12, seed=1)  # trk-000 .. trk-011 again, scored by another run
    write_thresholds(tmp_path / "thresholds.json", {"piano": THRESHOLD})
    server = serve(tmp_path, str(tmp_path / "labels"), runs=("run", "run2"))
    try:
        assert call(server, "/api/review?tag=piano&limit=1")[1]["left"] == TRACKS
        post(server, "trk-005", "piano", "no")  # in both runs
        post(server, "trk-030", "piano", "no")  # in one
        after = call(server, "/api/review?tag=piano&limit=500")[1]
        assert after["left"] == TRACKS - 2 == len(after["tracks"]) and after["decided"] == 2
        for track_id in [t["track_id"] for t in after["tracks"]]:
            post(server, track_id, "piano", "yes")
        # Agreement from the first run that scores a track (run, which holds every one).
        verdicts = {t: "no" if t in ("trk-005", "trk-030") else "yes" for t in scores}
        agree = sum((scores[t]["piano"] >= THRESHOLD) == (v == "yes") for t, v in verdicts.items())
        assert call(server, "/api/review?tag=piano&limit=1")[1] == {
            "tag": "piano",
            "tracks": [],
            "left": 0,
            "decided": TRACKS,
            "agree": agree,
        }
    finally:
        server.stop()
        server.explorer.close()


def test_explore_probe_needs_a_probe_with_its_report(tmp_path, capsys):
    write_run(tmp_path / "run", tracks=4)
    (tmp_path / "empty").mkdir()
    older = tmp_path / "older"  # a probe from before probe train wrote report.json
    older.mkdir()
    probe = {"name": "p", "version": "1", "source_model": {"name": "musicnn-mtt", "version": "1"}, "tags": {}}
    (older / "probe.json").write_text(json.dumps(probe))
    argv = ["explore", "--tags", str(tmp_path / "run"), "--port", "0", "--probe"]
    for folder, words in ((tmp_path / "empty", "cannot read probe"), (older, "report.json")):
        assert cli([*argv, str(folder)]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert os.listdir(tmp_path / "empty") == [] and os.listdir(older) == ["probe.json"]
