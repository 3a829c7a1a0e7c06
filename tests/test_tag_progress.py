"""tag's progress lines: a track counts once, when its last patch leaves the model."""

import re

from pipelines import tag_progress
from pipelines.tag_rows import PatchKey


def patch(track: str, index: int, n_patches: int):
    """A (key, outputs) pair as tag's model step emits it, the key as tag builds it."""
    return PatchKey(track, index, n_patches, f"/audio/{track}.wav", 3.0 * n_patches), {"scores": [index]}


def run(progress: tag_progress.Progress, elements) -> list:
    progress.setup()
    out = [item for element in elements for item in progress.process(element)]
    progress.teardown()
    return out


LINE = re.compile(r"tagscale tag: (\d+) tracks through the model(, of \d+ catalog rows)? \(\d+\.\d tracks/s\)")


def test_a_track_counts_when_its_last_patch_comes_out(capsys):
    elements = [patch("a", 0, 3), patch("b", 0, 1), patch("a", 2, 3), patch("a", 1, 3), patch("c", 1, 2)]
    assert run(tag_progress.Progress(total=10, every_s=0.0), elements) == elements  # passed on unchanged
    lines = capsys.readouterr().err.splitlines()
    # b (its only patch), a (index 2 of 3), c (index 1 of 2); a's other patches count nothing
    assert [LINE.fullmatch(line).group(1) for line in lines] == ["1", "2", "3"]
    assert all(line.split(" (")[0].endswith(", of 10 catalog rows") for line in lines)


def test_between_reports_the_rest_is_printed_once_at_the_end(capsys):
    elements = [patch(f"t{i}", 0, 1) for i in range(7)]
    run(tag_progress.Progress(every_s=3600.0), elements)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and LINE.fullmatch(lines[0]).groups() == ("7", None)
    run(tag_progress.Progress(every_s=3600.0), [patch("x", 0, 2)])  # no track finished: silent
    assert capsys.readouterr().err == ""
