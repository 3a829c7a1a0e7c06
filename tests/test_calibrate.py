"""calibrate on small hand-made runs: damaged scores, foreign or read-only outputs are one line."""

import json

import numpy as np
import pytest
from tag_runs import labelled_run, small_run

from infra.cli import main as cli


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


@pytest.mark.root
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


# ------------------------- thresholds: on the tagged demo catalog, known scores, the decided view


@pytest.mark.slow
def test_calibrate_meets_target_precision_and_lists_thin_tags(tagged_demo, tmp_path, capsys):
    from tag_runs import NOT_IN_MUSICNN, TAGGED_DEMO_TRACKS, write_labels

    from tagruns import calibrate, query, tagdata

    truth = dict(tagged_demo["truth"])
    for track_id in sorted(truth)[3:]:  # leave only 3 'drums' positives ... fewer than 5
        truth[track_id] = truth[track_id] - {"drums"}
    labels = write_labels(tmp_path / "labels.csv", truth, sorted(truth))
    output = tmp_path / "thresholds.json"
    assert (
        cli(
            [
                "calibrate",
                "--tags",
                tagged_demo["tags"],
                "--labels",
                labels,
                "--precision",
                "0.8",
                "--output",
                str(output),
            ]
        )
        == 0
    )
    assert "not enough labels" in capsys.readouterr().out
    document = json.loads(output.read_text())
    assert document["target_precision"] == 0.8 and document["model"]["name"] == "musicnn-mtt"
    assert "drums" in document["insufficient_labels"] and "techno" in document["insufficient_labels"]
    assert document["labels_not_in_vocabulary"] == sorted(NOT_IN_MUSICNN)
    table = tagdata.load(tagged_demo["tags"])
    rows = [table.row(t) for t in sorted(truth)]
    assert len(document["tags"]) >= 5
    for name, entry in document["tags"].items():
        y = np.array([name in truth[t] for t in sorted(truth)])
        chosen = table.scores[rows, table.tags.index(name)] >= entry["threshold"]
        assert y[chosen].mean() >= 0.8 and y[chosen].mean() == pytest.approx(entry["precision"], abs=1e-4)
        assert chosen[y].mean() == pytest.approx(entry["recall"], abs=1e-4) and entry["support"] == y.sum()
    thresholds = calibrate.load_thresholds(str(output))
    assert thresholds == {name: entry["threshold"] for name, entry in document["tags"].items()}
    # query top --thresholds keeps exactly the tracks at or above the threshold; decided agrees.
    name = max(document["tags"], key=lambda n: document["tags"][n]["recall"])
    expected = int((table.scores[:, table.tags.index(name)] >= thresholds[name]).sum())
    assert (
        cli(
            [
                "query",
                "--tags",
                tagged_demo["tags"],
                "--json",
                "top",
                name,
                "--limit",
                "1000",
                "--thresholds",
                str(output),
            ]
        )
        == 0
    )
    kept = json.loads(capsys.readouterr().out)
    assert len(kept) == expected and min(r["score"] for r in kept) >= round(thresholds[name], 4) - 1e-4
    connection = query.connect(tagged_demo["tags"], thresholds)
    decided = connection.execute(f'SELECT count(*) FILTER (WHERE "{name}"), count(*) FROM decided').fetchone()
    assert decided == (expected, TAGGED_DEMO_TRACKS)
    columns = [d[0] for d in connection.execute("SELECT * FROM decided LIMIT 1").description]
    assert columns == ["track_id", "uri", *sorted(thresholds)]
    assert cli(["query", "--tags", tagged_demo["tags"], "top", "techno", "--thresholds", str(output)]) == 2
    assert "no threshold for 'techno'" in capsys.readouterr().err


def test_threshold_at_precision_on_known_scores():
    from tagruns import calibrate

    y = np.array([1, 1, 0, 1, 0, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    # At 0.6: 3 of 4 right (0.75); at 0.8: 2 of 2. Target 0.75 -> 0.6 with recall 3/4.
    assert calibrate.threshold_at_precision(y, scores, 0.75) == {
        "threshold": 0.6,
        "precision": 0.75,
        "recall": 0.75,
        "support": 4,
    }
    assert calibrate.threshold_at_precision(y, scores, 0.9)["threshold"] == 0.8
    assert calibrate.threshold_at_precision(np.array([0, 1]), np.array([0.9, 0.1]), 0.8) is None


def test_decided_view_quotes_any_tag_name(tmp_path):
    """The decided view: a thresholds file applied in query, one boolean column per tag."""
    from tagruns import query

    run = small_run(
        tmp_path, [{"no vocals": 0.9, 'it"s': 0.2}, {"no vocals": 0.3, 'it"s': 0.7}], [[1.0, 0.0], [0.0, 1.0]]
    )
    connection = query.connect(run, {"no vocals": 0.5, 'it"s': 0.7})
    assert connection.execute('SELECT track_id, "no vocals", "it""s" FROM decided ORDER BY track_id').fetchall() == [
        ("t0", True, False),
        ("t1", False, True),
    ]


def test_bad_labels_and_thresholds_files_are_clear_errors(tmp_path, capsys):
    from runtime.errors import TagscaleError
    from tagruns import calibrate

    run = small_run(tmp_path / "run", [{"a": 0.9}, {"a": 0.1}, {"a": 0.5}], [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    (tmp_path / "labels.csv").write_text("id,label\nt0,a\n")
    argv = ["calibrate", "--tags", run, "--labels", str(tmp_path / "labels.csv"), "--output", str(tmp_path / "t.json")]
    assert cli(argv) == 2
    assert "expected a header track_id,tag" in capsys.readouterr().err
    (tmp_path / "t.json").write_text('{"tags": {"a": 0.5}}')
    with pytest.raises(TagscaleError, match="not a thresholds file"):
        calibrate.load_thresholds(str(tmp_path / "t.json"))
