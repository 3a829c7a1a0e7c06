"""calibrate on small hand-made runs: damaged scores, foreign or read-only outputs are one line."""

import json

import numpy as np
from test_beyond_tags import small_run

from infra.cli import main as cli


def labelled_run(folder, *, nan_rows=()):
    """20 tracks, tag a scoring high on the labelled positives; labels.csv beside the run."""
    rng = np.random.default_rng(0)
    positive = [i % 2 == 0 for i in range(20)]
    scores = [{"a": float("nan") if i in nan_rows else 0.6 + 0.3 * p} for i, p in enumerate(positive)]
    run = small_run(folder / "run", scores, rng.normal(size=(20, 4)).tolist())
    labels = folder / "labels.csv"
    labels.write_text("track_id,tag\n" + "".join(f"t{i},{'a' if p else 'z'}\n" for i, p in enumerate(positive)))
    return ["calibrate", "--tags", run, "--labels", str(labels)]


def err_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_nan_scores_are_one_line(tmp_path, capsys):
    argv = labelled_run(tmp_path, nan_rows=(3, 4))
    assert cli([*argv, "--output", str(tmp_path / "t.json")]) == 2
    assert err_line(capsys) == (
        "tagscale calibrate: error: 2 labelled tracks have scores that are not numbers (NaN or inf), "
        "e.g. t3, t4: the tag output is damaged; tag those tracks again"
    )
    assert not (tmp_path / "t.json").exists()


def test_calibrate_replaces_only_its_own_thresholds_file(tmp_path, capsys):
    argv = labelled_run(tmp_path)
    mine = tmp_path / "notes.json"
    mine.write_text('{"my": "notes"}')
    assert cli([*argv, "--output", str(mine)]) == 2
    assert err_line(capsys) == (
        f"tagscale calibrate: error: --output {mine} exists and is not a thresholds file; refusing to replace it"
    )
    assert mine.read_text() == '{"my": "notes"}'
    assert cli([*argv, "--output", "/thresholds-of-a-test.json"]) == 2
    assert "is in a filesystem root" in err_line(capsys)
    thresholds = tmp_path / "t.json"
    for _ in range(2):  # the second run replaces the first's file
        assert cli([*argv, "--output", f"file://{thresholds}"]) == 0
        assert json.loads(thresholds.read_text())["tags"]["a"]["precision"] == 1.0


def test_a_read_only_output_is_one_line(tmp_path):
    from read_only import run_read_only

    argv = labelled_run(tmp_path)
    (tmp_path / "ro").mkdir()
    result = run_read_only(tmp_path / "ro", [*argv, "--output", str(tmp_path / "ro" / "t.json")])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"tagscale calibrate: error: cannot write to {tmp_path}/ro/t.json: "
        f"{tmp_path}/ro is read-only or not writable by this user"
    )
