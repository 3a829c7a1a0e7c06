"""The labels folder: atomic appends from threads and processes, the latest verdict wins, and
probe, calibrate and evaluate read it with an explicit "no" as a negative."""

import json
import multiprocessing
import os
import threading

import numpy as np
import pytest
from tag_runs import labelled_run, small_run

from infra.cli import main as cli
from runtime.errors import TagscaleError
from tagruns import labels

MODEL = {"name": "m", "version": "1"}


def _write_many(directory: str, worker: int, count: int) -> None:
    store = labels.LabelStore(directory, create=True)
    for i in range(count):
        store.append(f"w{worker}-t{i}", "piano", "yes" if i % 2 else "no", run="run", model=MODEL)
        store.append("shared", f"tag{worker}", "no", run="run", model=MODEL)
        store.append("shared", f"tag{worker}", "yes", run="run", model=MODEL)


def test_latest_verdict_wins_and_files_are_whole(tmp_path):
    store = labels.LabelStore(str(tmp_path / "labels"), create=True)
    store.append("t1", "piano", "yes", run="r", model=MODEL)
    store.append("t1", "piano", "no", run="r", model=MODEL)
    store.append("t1", "bass", "yes", run="r", model=MODEL)
    latest = labels.LabelStore(str(tmp_path / "labels")).latest()  # a second reader, as another process
    assert {key: record["verdict"] for key, record in latest.items()} == {("t1", "piano"): "no", ("t1", "bass"): "yes"}
    assert set(latest[("t1", "bass")]) == {"track_id", "tag", "verdict", "run", "model", "time"}
    files = os.listdir(tmp_path / "labels" / labels.DECISIONS)
    assert len(files) == 3 and all(name.endswith(".json") and not name.startswith(".") for name in files)
    # An explicit "no" leaves the track labelled: a negative for the readers.
    assert labels.label_sets(latest) == {"t1": {"bass"}}
    store.append("t2", "piano", "no", run="r", model=MODEL)
    assert labels.label_sets(store.latest()) == {"t1": {"bass"}, "t2": set()}


def test_threads_and_processes_append_at_once_and_lose_nothing(tmp_path):
    directory = str(tmp_path / "labels")
    per_worker = 40
    threads = [threading.Thread(target=_write_many, args=(directory, w, per_worker)) for w in range(4)]
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: another explorer process
    processes = [context.Process(target=_write_many, args=(directory, w, per_worker)) for w in (4, 5)]
    failures, done = [], threading.Event()

    def read_meanwhile():  # a reader never sees half a decision
        reader = labels.LabelStore(directory)
        while not done.is_set():
            try:
                reader.decisions()
            except TagscaleError as error:
                failures.append(str(error))

    reader = threading.Thread(target=read_meanwhile)
    for worker in threads + processes + [reader]:
        worker.start()
    for worker in threads + processes:
        worker.join(timeout=300)
    done.set()
    reader.join()
    assert failures == []
    assert all(p.exitcode == 0 for p in processes)
    store = labels.LabelStore(directory)
    decisions = store.decisions()
    assert len(decisions) == 6 * per_worker * 3  # every append is there, each file whole JSON
    assert not [n for n in os.listdir(os.path.join(directory, labels.DECISIONS)) if n.startswith(".")]
    latest = store.latest()
    # Each worker's own "no" then "yes" on the shared track: its last word wins.
    assert {tag: latest[("shared", tag)]["verdict"] for tag in (f"tag{w}" for w in range(6))} == dict.fromkeys(
        (f"tag{w}" for w in range(6)), "yes"
    )
    assert latest[("w5-t3", "piano")]["verdict"] == "yes" and latest[("w5-t4", "piano")]["verdict"] == "no"


@pytest.mark.parametrize(
    "tag, message",
    [
        ("pi\nano", "control character"),
        ("a;b", "';'"),
        ("x" * 101, "at most 100"),
        ("   ", "empty"),
        (7, "must be text"),
    ],
)
def test_bad_tag_names_are_refused_and_nothing_is_written(tmp_path, tag, message):
    store = labels.LabelStore(str(tmp_path / "labels"), create=True)
    with pytest.raises(TagscaleError, match=message):
        store.append("t1", tag, "yes", run="r", model=MODEL)
    with pytest.raises(TagscaleError, match="verdict"):
        store.append("t1", "piano", "maybe", run="r", model=MODEL)
    assert store.decisions() == []
    assert labels.check_tag("  christmas ") == "christmas"


def _store_of(directory, verdicts: dict[str, dict[str, str]]) -> str:
    store = labels.LabelStore(str(directory), create=True)
    for track_id, tags in verdicts.items():
        for tag, verdict in tags.items():
            store.append(track_id, tag, verdict, run="run", model=MODEL)
    return str(directory)


def test_probe_trains_from_a_labels_folder_with_explicit_negatives(tmp_path, capsys):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(40, 8)).tolist()
    run = small_run(tmp_path / "run", [{"a": 0.5} for _ in embeddings], embeddings)
    # Only tag "x" is ever named: the tracks without it are negatives only through their "no".
    verdicts = {f"t{i}": {"x": "yes" if e[0] > 0 else "no"} for i, e in enumerate(embeddings)}
    verdicts["t0"] = {"x": "no" if embeddings[0][0] > 0 else "yes"}  # changed its mind ...
    store = labels.LabelStore(_store_of(tmp_path / "labels", verdicts))
    store.append("t0", "x", "yes" if embeddings[0][0] > 0 else "no", run="run", model=MODEL)  # ... and back
    argv = ["probe", "train", "--tags", run, "--labels", str(tmp_path / "labels"), "--output", str(tmp_path / "p")]
    assert cli(argv) == 0, capsys.readouterr().err
    probe = json.loads((tmp_path / "p" / "probe.json").read_text())
    positives = sum(e[0] > 0 for e in embeddings)
    assert (probe["tags"]["x"]["positives"], probe["tags"]["x"]["negatives"]) == (positives, 40 - positives)
    assert probe["tags"]["x"]["cv_roc_auc"] > 0.9  # the label is a linear function of the embedding


def test_calibrate_and_evaluate_read_a_folder_as_they_read_the_csv(tmp_path, capsys):
    argv = labelled_run(tmp_path)  # 20 tracks; labels.csv: even tracks "a", odd ones "z"
    run = argv[argv.index("--tags") + 1]
    folder = _store_of(tmp_path / "labels", {f"t{i}": {"a": "yes" if i % 2 == 0 else "no"} for i in range(20)})
    assert cli([*argv, "--output", str(tmp_path / "from-csv.json")]) == 0
    csv_argv = [a if a != argv[argv.index("--labels") + 1] else folder for a in argv]
    assert cli([*csv_argv, "--output", str(tmp_path / "from-dir.json")]) == 0
    from_csv = json.loads((tmp_path / "from-csv.json").read_text())
    from_dir = json.loads((tmp_path / "from-dir.json").read_text())
    assert from_dir["tags"]["a"] == from_csv["tags"]["a"] and from_dir["tags"]["a"]["support"] == 10
    capsys.readouterr()
    assert cli(["evaluate", "--tags", run, "--labels", folder, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["per_tag"]["a"] == {"roc_auc": 1.0, "pr_auc": 1.0, "positives": 10}
    assert result["tracks"] == 20
    assert cli(["evaluate", "--tags", run, "--labels", folder, "--split", "test"]) == 2
    assert "labels folder" in capsys.readouterr().err


def test_an_empty_or_damaged_folder_is_one_line(tmp_path, capsys):
    argv = labelled_run(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    argv[argv.index("--labels") + 1] = str(empty)
    assert cli([*argv, "--output", str(tmp_path / "t.json")]) == 2
    assert "has no decisions" in capsys.readouterr().err
    _store_of(empty, {"t1": {"a": "yes"}})
    (empty / labels.DECISIONS / "junk.json").write_text("{not json")
    assert cli([*argv, "--output", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert "junk.json is not a decision" in err and "Traceback" not in err
