"""explore in a real browser: Debian's headless chromium driven by Selenium, against a real server.

`make test` installs chromium and chromium-driver with apt-get when they are missing; where that
was impossible these tests fail and name what is missing (they never skip).
"""

import json
import os
import pathlib
import subprocess
import sys
import urllib.request

import pytest
from chromium import browser, no_console_errors, open_view, wait  # noqa: F401 (browser: a fixture)
from explore_http import record_requests
from explore_run import write_run, write_thresholds

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The explorer's server over two runs, recording every request in ``server.seen``."""
    from infra.explore.query import Explorer
    from infra.explore.server import ExplorerServer

    root = tmp_path_factory.mktemp("explore_browser")
    write_run(root / "run-mtt")
    write_run(root / "run-spec", tracks=10, model=("spectrogram", "2"), seed=1)
    thresholds = write_thresholds(root / "thresholds.json", {"piano": 0.6, "drums": 0.3})
    explorer = Explorer.open([str(root / "run-mtt"), str(root / "run-spec")], str(thresholds))
    httpd = ExplorerServer(explorer, "127.0.0.1", 0, quiet=True)
    record_requests(httpd)
    httpd.start()
    yield httpd
    httpd.stop()
    explorer.close()


def rows(driver):
    return [link.text for link in driver.find_elements("css selector", "#results tbody a.track-link")]


def api(server, path):
    with urllib.request.urlopen(server.url.rstrip("/") + path, timeout=30) as response:
        return json.loads(response.read())


def test_browse_lists_tracks_and_a_tag_filter_changes_the_list(browser, server, tmp_path):  # noqa: F811
    open_view(browser, server, "#/")
    first_tag = api(server, "/api/tags")[0]["tag"]
    assert rows(browser) == [t["track_id"] for t in api(server, f"/api/tracks?tag={first_tag}&min=0.5")["tracks"]]
    browser.save_screenshot(str(tmp_path / "browse.png"))
    before = rows(browser)
    other = next(
        button
        for button in browser.find_elements("css selector", "button.tag-filter")
        if button.get_attribute("data-tag") == "drums"
    )
    other.click()
    wait(
        browser,
        lambda d: "drums" in d.find_element("id", "title").text and rows(d) != before,
        "the list did not change",
    )
    want = api(server, "/api/tracks?tag=drums&min=0.5")
    assert rows(browser) == [t["track_id"] for t in want["tracks"]] and rows(browser) != before
    assert browser.find_element("id", "count").text == f"1–{min(20, want['total'])} of {want['total']}"
    assert "tag=drums" in browser.find_element("id", "export").get_attribute("href")
    browser.find_element("id", "calibrated").click()  # drums has a calibrated threshold (0.3, run-mtt only)
    calibrated = api(server, "/api/tracks?tag=drums&min=calibrated")
    wait(
        browser,
        lambda d: d.find_element("id", "count").text.endswith(f"of {calibrated['total']}"),
        "the threshold did not apply",
    )
    browser.save_screenshot(str(tmp_path / "browse-drums.png"))
    assert (tmp_path / "browse-drums.png").stat().st_size > 10_000
    no_console_errors(browser)


def test_track_page_shows_scores_similar_tracks_and_loads_the_audio(browser, server, tmp_path):  # noqa: F811
    open_view(browser, server, "#/?tag=piano")
    link = browser.find_element("css selector", "#results tbody a.track-link")
    track_id = link.text
    link.click()
    wait(
        browser,
        lambda d: d.execute_script("return document.body.dataset.ready") == f"#/track/{track_id}",
        "the track page did not render",
    )
    assert browser.find_element("id", "title").text == track_id
    detail = api(server, f"/api/tracks/{track_id}")
    assert len(browser.find_elements("css selector", "table.scores tr")) == sum(
        len(run["scores"]) for run in detail["runs"]
    )
    wait(browser, lambda d: len(d.find_elements("css selector", "#similar a.track-link")) == 10, "no similar tracks")
    state = wait(
        browser,
        lambda d: d.execute_script(
            "const a = document.getElementById('player');"
            "return a.readyState >= 1 && a.duration > 0 "
            "? {ready: a.readyState, duration: a.duration, error: a.error} : null;"
        ),
        "the audio element did not load its source",
    )
    assert state["error"] is None and state["duration"] == pytest.approx(1.5, abs=0.01)
    audio_path = f"/api/tracks/{track_id}/audio"
    assert ("GET", audio_path, 206) in server.seen, [r for r in server.seen if r[1] == audio_path]
    browser.save_screenshot(str(tmp_path / "track.png"))
    no_console_errors(browser)


def test_summary_page_shows_histograms_and_dead_letters(browser, server, tmp_path):  # noqa: F811
    open_view(browser, server, "#/summary")
    stats = api(server, "/api/stats")
    assert (
        browser.find_element("id", "title").text
        == f"Summary: {stats['tracks']} tracks, {stats['dead_letters']} dead letters"
    )
    assert len(browser.find_elements("css selector", "svg.hist")) == sum(len(run["tags"]) for run in stats["runs"])
    dead = [row.text for row in browser.find_elements("css selector", "table.dead-letters tr")[1:]]
    assert "decode file not found: ... 2" in dead
    browser.find_element("link text", "piano").click()
    wait(
        browser,
        lambda d: d.execute_script("return document.body.dataset.ready") == "#/?tag=piano",
        "the tag link did not open Browse",
    )
    browser.save_screenshot(str(tmp_path / "summary-to-browse.png"))
    open_view(browser, server, "#/summary")
    browser.save_screenshot(str(tmp_path / "summary.png"))
    no_console_errors(browser)


def test_a_missing_browser_fails_and_is_named(tmp_path):
    """Without chromium the browser tests fail (not skip), naming the missing file."""
    missing = str(tmp_path / "no-chromium")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{__file__}::test_summary_page_shows_histograms_and_dead_letters",
        ],
        cwd=pathlib.Path(__file__).parents[1],
        env={**os.environ, "TAGSCALE_CHROMIUM": missing},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stdout[-2000:]
    assert "1 error" in result.stdout and "skipped" not in result.stdout
    assert f"missing {missing}" in result.stdout
