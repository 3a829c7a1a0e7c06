"""The Track page's segments heatmap in headless Chromium: one column per segment row, a playhead,
and a click that seeks the audio. Chromium, chromedriver and the helpers as test_explore_browser."""

import pyarrow
import pyarrow.parquet as pq
import pytest
from chromium import browser, no_console_errors, open_view, wait  # noqa: F401 (browser: a fixture)
from explore_run import TAGS, write_run

from model import dsp
from runfolder import manifest, segments

SECONDS = 10.0  # three patches: 0-2.992, 2.992-5.984, 5.984-8.976 s (the last second is in none)


def add_segments(run_dir, seconds: float) -> dict:
    """Write ``run_dir``'s segments table (one file) and a manifest listing both tables, as
    ``tag --segments`` does; each tag's score rises with the patch index at its own pace."""
    track_ids = sorted(
        row for path in manifest.tag_files(str(run_dir)) for row in pq.read_table(path)["track_id"].to_pylist()
    )
    rows = []
    for i, track_id in enumerate(track_ids):
        n = dsp.n_patches(int(seconds * dsp.SAMPLE_RATE))
        patches = [(k, [((k + 1) * (j + 1 + i)) % 10 / 10 for j in range(len(TAGS))]) for k in range(n)]
        rows += segments.segment_rows(track_id, patches, tags=TAGS, duration_s=seconds)
    name = "segments-run-1-00000-of-00001.parquet"
    pq.write_table(pyarrow.Table.from_pylist(rows, schema=segments.schema_for(TAGS)), run_dir / "tags" / name)
    files = sorted(path.name for path in (run_dir / "tags").glob("run-*.parquet"))
    manifest.write_tags_manifest(str(run_dir / "tags"), files, run_id="1", segment_names=[name])
    return {track_id: [row for row in rows if row["track_id"] == track_id] for track_id in track_ids}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from infra.explore.query import Explorer
    from infra.explore.server import ExplorerServer

    root = tmp_path_factory.mktemp("explore_heatmap")
    write_run(root / "run", tracks=4, seconds=SECONDS)
    rows = add_segments(root / "run", SECONDS)
    write_run(root / "plain", tracks=6, seconds=1.5, seed=1)
    explorer = Explorer.open([str(root / "run"), str(root / "plain")])
    httpd = ExplorerServer(explorer, "127.0.0.1", 0, quiet=True)
    httpd.start()
    httpd.segment_rows = rows
    yield httpd
    httpd.stop()
    explorer.close()


def test_heatmap_has_a_column_per_segment_and_a_click_seeks_the_audio(browser, server, tmp_path):  # noqa: F811
    track_id = "trk-002"
    open_view(browser, server, f"#/track/{track_id}")
    wait(browser, lambda d: d.find_element("id", "heatmap").get_attribute("data-ready") == "1", "no heatmap drawn")
    stored = server.segment_rows[track_id]
    columns = browser.find_elements("css selector", "#heatmap .heat-col")
    assert len(stored) == 3 and len(columns) == len(stored)
    assert [float(c.get_attribute("data-start")) for c in columns] == [row["start_s"] for row in stored]
    assert all(len(c.find_elements("css selector", "div")) == len(TAGS) for c in columns)
    # As wide as their segments last on the track's time axis (10 s; the last 1.024 s in no patch).
    area = browser.find_element("css selector", "#heatmap .heat-area").rect["width"]
    for column, row in zip(columns, stored):
        assert column.rect["width"] == pytest.approx(area * (row["end_s"] - row["start_s"]) / SECONDS, abs=1.5)
    wait(
        browser,
        lambda d: d.execute_script("return document.getElementById('player').readyState >= 1"),
        "the audio did not load",
    )
    playhead = browser.find_element("css selector", "#heatmap .heat-playhead")
    start_x = playhead.rect["x"]
    columns[2].click()
    wait(
        browser,
        lambda d: (
            abs(d.execute_script("return document.getElementById('player').currentTime") - stored[2]["start_s"]) < 0.01
        ),
        "the click did not move audio.currentTime",
    )
    # The playhead follows: at the clicked column's left edge.
    assert playhead.rect["x"] > start_x
    assert playhead.rect["x"] + 1 == pytest.approx(columns[2].rect["x"], abs=2)
    browser.execute_script("document.getElementById('player').currentTime = 1.0")
    wait(browser, lambda d: abs(playhead.rect["x"] + 1 - columns[0].rect["x"] - area / SECONDS) < 2, "no playhead move")
    browser.save_screenshot(str(tmp_path / "heatmap.png"))
    no_console_errors(browser)


def test_a_track_without_segments_has_no_heatmap(browser, server):  # noqa: F811
    assert "trk-005" not in server.segment_rows  # only in the run tagged without segments
    open_view(browser, server, "#/track/trk-005")
    assert browser.find_element("id", "title").text == "trk-005"
    assert browser.find_elements("id", "heatmap") == []
    no_console_errors(browser)
