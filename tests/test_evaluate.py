"""`tagscale evaluate`: a real tag run scored against labels, checked against scikit-learn."""

import collections
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from made import SMALL_MODEL_TAGS as TAGS
from sklearn.metrics import average_precision_score, roc_auc_score

from infra.cli import main as cli
from pipelines import catalog_datasets as datasets
from pipelines import tag
from runfolder import manifest
from runtime.errors import TagscaleError
from tagruns import evaluate

N_TRACKS = 14


def labels_of(index: int) -> list[str]:
    """Each track's true tags: "low" on every other track, "mid" on every third, "high" never,
    "bass" (a tag the model does not have) on two; tracks 0, 2, 6, 8 and 12 have none."""
    tags = [name for name, every in (("low", 2), ("mid", 3)) if index % every == 1]
    return tags + (["bass"] if index in (3, 4) else [])


@pytest.fixture(scope="module")
def run(tmp_path_factory, small_model):
    """A small model's tag run over N_TRACKS synthesized tracks, and a labels catalog for them
    plus two tracks the run lacks."""
    import soundfile
    from made import synth_tone

    root = tmp_path_factory.mktemp("evaluate")
    lines = ["track_id,uri,tags,split"]
    for index in range(N_TRACKS):
        path = root / f"t{index:02d}.wav"
        soundfile.write(path, synth_tone(3.5 + index % 3, 16000, seed=index), 16000)
        lines.append(f"t{index:02d},{path},,")
    (root / "catalog.csv").write_text("\n".join(lines) + "\n")
    summary = tag.run(["--catalog", str(root / "catalog.csv"), "--model", small_model, "--output", str(root / "run")])
    assert summary["tagged"] == N_TRACKS
    rows = [
        {
            "track_id": f"t{index:02d}",
            "uri": f"/a/t{index:02d}.wav",
            "tags": labels_of(index),
            "split": "test" if index < 10 else "valid",
        }
        for index in range(N_TRACKS + 2)  # t14, t15: labelled, never tagged
    ]
    datasets.write_catalog(rows, str(root / "labels.parquet"))
    return {"root": root, "tags": str(root / "run"), "labels": str(root / "labels.parquet"), "rows": rows}


def sklearn_reference(tags_dir: str, truth: dict[str, list[str]]) -> dict[str, tuple[float, float]]:
    """Per tag (roc_auc, pr_auc) with scikit-learn straight over the run's Parquet files."""
    table = pq.read_table(manifest.tag_files(tags_dir)).to_pylist()
    scores = {row["track_id"]: {s["tag"]: s["score"] for s in row["scores"]} for row in table}
    ids = [track_id for track_id in truth if track_id in scores]
    out = {}
    for name in TAGS:
        y = [name in truth[track_id] for track_id in ids]
        if 0 < sum(y) < len(y):
            s = [scores[track_id][name] for track_id in ids]
            out[name] = (roc_auc_score(y, s), average_precision_score(y, s))
    return out


@pytest.mark.slow
def test_evaluate_matches_sklearn_over_the_same_parquet_and_labels(run, capsys):
    truth = {row["track_id"]: row["tags"] for row in run["rows"]}
    reference = sklearn_reference(run["tags"], truth)
    assert sorted(reference) == ["low", "mid"]  # "high" has no positive: no AUC
    assert cli(["evaluate", "--tags", run["tags"], "--labels", run["labels"], "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["roc_auc"] == pytest.approx(np.mean([r[0] for r in reference.values()]), abs=1e-12)
    assert result["pr_auc"] == pytest.approx(np.mean([r[1] for r in reference.values()]), abs=1e-12)
    for name, (roc, pr) in reference.items():
        assert result["per_tag"][name]["roc_auc"] == pytest.approx(roc, abs=1e-12)
        assert result["per_tag"][name]["pr_auc"] == pytest.approx(pr, abs=1e-12)
    # counted: the 14 tracks of the run, track t00 (no tag at all) as a negative of every tag
    assert (result["tracks"], result["tags"]) == (N_TRACKS, 2)
    assert result["per_tag"]["low"]["positives"] == 7 and result["per_tag"]["mid"]["positives"] == 5
    assert result["tags_left_out"] == {
        "high": f"only negatives among the {N_TRACKS} labelled tracks",
        "bass": "not a tag of the run",
    }
    assert result["tracks_left_out"] == {"labelled_not_in_run": 2, "in_run_not_labelled": 0, "examples": ["t14", "t15"]}
    assert result["model"]["name"] == "small" and result["split"] is None
    # the text report says the same
    assert cli(["evaluate", "--tags", run["tags"], "--labels", run["labels"]]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"ROC-AUC {result['roc_auc']:.4f}  PR-AUC {result['pr_auc']:.4f}  (macro over 2 tags, 14")
    assert "high: only negatives" in text and "labelled tracks not in the run (left out): 2, e.g. t14, t15" in text


@pytest.mark.slow
def test_evaluate_reads_calibrate_labels_and_a_catalog_split(run, capsys):
    # calibrate's labels file: only tracks with a positive are labelled, so t00 is not counted
    path = run["root"] / "labels.csv"
    positives = [(row["track_id"], name) for row in run["rows"] for name in row["tags"]]
    path.write_text("track_id,tag\n" + "".join(f"{track_id},{name}\n" for track_id, name in positives))
    result = evaluate.evaluate(evaluate.tagdata.load(run["tags"]), evaluate.read_labels(str(path)))
    truth = {row["track_id"]: row["tags"] for row in run["rows"] if row["tags"]}
    reference = sklearn_reference(run["tags"], truth)
    assert result["tracks"] == N_TRACKS - 5  # t00, t02, t06, t08 and t12 have no tag
    assert result["roc_auc"] == pytest.approx(np.mean([r[0] for r in reference.values()]), abs=1e-12)
    # --split keeps one split of a catalog: t00-t09 are "test"
    assert cli(["evaluate", "--tags", run["tags"], "--labels", run["labels"], "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    test_truth = {row["track_id"]: row["tags"] for row in run["rows"] if row["split"] == "test"}
    reference = sklearn_reference(run["tags"], test_truth)
    assert result["tracks"] == 10 and result["split"] == "test"
    assert result["roc_auc"] == pytest.approx(np.mean([r[0] for r in reference.values()]), abs=1e-12)
    assert result["tracks_left_out"]["in_run_not_labelled"] == N_TRACKS - 10


@pytest.mark.slow
def test_bad_labels_are_one_line_and_exit_2(run, tmp_path, capsys):
    cases = {
        "wrong_header.csv": ("id,label\nt00,low\n", "CSV header must be track_id,uri"),
        "no_tags.csv": ("track_id,uri\nt00,/a.wav\n", "no track has a tag"),
        "labels.txt": ("t00 low\n", "expected a header track_id,tag"),
        "bad_row.csv": ("track_id,tag\nt00,low,extra\n", "line 2: expected track_id,tag"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        assert cli(["evaluate", "--tags", run["tags"], "--labels", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and err.startswith("tagscale evaluate: error: "), (name, err)
    assert cli(["evaluate", "--tags", run["tags"], "--labels", str(tmp_path / "missing.csv")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "strangers.csv").write_text("track_id,tag\nnobody,low\n")
    assert cli(["evaluate", "--tags", run["tags"], "--labels", str(tmp_path / "strangers.csv")]) == 2
    assert "none of the 1 labelled tracks is in the tag output" in capsys.readouterr().err
    with pytest.raises(TagscaleError, match="--split needs a catalog"):
        evaluate.read_labels(str(tmp_path / "strangers.csv"), "test")


def test_read_labels_keeps_untagged_catalog_rows_as_negatives(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"track_id": "a", "uri": "/a", "tags": ["x"], "split": "test"}\n'
        '{"track_id": "b", "uri": "/b", "tags": [], "split": "test"}\n'
        '{"track_id": "c", "uri": "/c", "tags": ["y"], "split": "train"}\n'
        '{"track_id": "a", "uri": "/a2", "tags": ["y"], "split": "test"}\n'
    )
    assert evaluate.read_labels(str(path)) == {"a": {"x"}, "b": set(), "c": {"y"}}
    assert evaluate.read_labels(str(path), "test") == {"a": {"x"}, "b": set()}
    assert collections.Counter(map(len, evaluate.read_labels(str(path)).values())) == {1: 2, 0: 1}
