"""probe train's report.json: per tag, cross-validated scores and a learning curve over growing
subsets of the labels, on a small hand-made run whose labels follow its embeddings."""

import json

import numpy as np
from tag_runs import small_run

from infra.cli import main as cli
from tagruns import probe_report

TRACKS = 40


def train(tmp_path, rows) -> tuple[dict, dict, np.ndarray]:
    """Run ``probe train`` on a 40-track run labelled with ``rows(embeddings)`` (CSV lines
    ``track_id,tag``); return report.json and probe.json as parsed, and the embeddings."""
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(TRACKS, 8))
    run = small_run(tmp_path / "run", [{"a": 0.5} for _ in embeddings], embeddings.tolist())
    labels = tmp_path / "labels.csv"
    labels.write_text("track_id,tag\n" + "".join(rows(embeddings)))
    probe = tmp_path / "probe"
    assert cli(["probe", "train", "--tags", run, "--labels", str(labels), "--output", str(probe)]) == 0
    return json.loads((probe / "report.json").read_text()), json.loads((probe / "probe.json").read_text()), embeddings


def test_report_json_has_counts_cv_scores_and_a_learning_curve_per_tag(tmp_path, capsys):
    # x: the tracks with a positive first dimension (learnable); rare: 3 tracks (too few for a
    # probe, enough for 3-fold cross-validation); once: 1 track (no cross-validation at all).
    def rows(embeddings):
        lines = [f"t{i},{'x' if e[0] > 0 else 'y'}\n" for i, e in enumerate(embeddings)]
        return lines + ["t0,rare\n", "t1,rare\n", "t2,rare\n", "t3,once\n"]

    report, probe, embeddings = train(tmp_path, rows)
    assert list(report) == ["tags"] and sorted(report["tags"]) == ["once", "rare", "x", "y"]
    assert sorted(probe["tags"]) == ["x", "y"] and probe["insufficient_labels"] == ["once", "rare"]
    positives = int((embeddings[:, 0] > 0).sum())
    x = report["tags"]["x"]
    assert set(x) == {"positives", "negatives", "cv_roc_auc", "cv_pr_auc", "learning_curve"}
    assert (x["positives"], x["negatives"]) == (positives, TRACKS - positives)
    # The 100 % point and the cross-validated scores are those probe.json reports (same folds).
    for tag in ("x", "y"):
        entry = report["tags"][tag]
        assert (entry["cv_roc_auc"], entry["cv_pr_auc"]) == (
            probe["tags"][tag]["cv_roc_auc"],
            probe["tags"][tag]["cv_pr_auc"],
        )
        assert entry["learning_curve"][-1] == {
            "labels": TRACKS,
            "roc_auc": entry["cv_roc_auc"],
            "pr_auc": entry["cv_pr_auc"],
        }
    # Subsets of 25/50/75/100 % per class.
    assert [p["labels"] for p in x["learning_curve"]] == [
        round(f * positives) + round(f * (TRACKS - positives)) for f in (0.25, 0.5, 0.75, 1.0)
    ]
    assert all(set(p) == {"labels", "roc_auc", "pr_auc"} and 0 <= p["roc_auc"] <= 1 for p in x["learning_curve"])
    # x follows one embedding dimension: learnt from all 40 labels, less well from 10 (measured
    # ROC-AUC 0.68, 0.82, 0.92, 0.94 at 10/20/30/40 labels; scikit-learn's lbfgs runs in numpy).
    assert x["cv_roc_auc"] >= 0.9 and x["learning_curve"][0]["roc_auc"] < x["cv_roc_auc"] - 0.1
    # rare: 3 positives, so 3 folds; its 25 % subset has 1 positive and is left out of the curve.
    rare = report["tags"]["rare"]
    assert (rare["positives"], rare["negatives"]) == (3, TRACKS - 3) and rare["cv_roc_auc"] is not None
    assert [p["labels"] for p in rare["learning_curve"]] == [
        round(f * 3) + round(f * (TRACKS - 3)) for f in (0.5, 0.75, 1.0)
    ]
    once = report["tags"]["once"]
    assert once == {
        "positives": 1,
        "negatives": TRACKS - 1,
        "cv_roc_auc": None,
        "cv_pr_auc": None,
        "learning_curve": [],
    }
    assert "learning curves ->" in capsys.readouterr().out


def test_the_subsets_are_nested_and_keep_the_classes_ratio():
    y = np.array([1] * 12 + [0] * 28)
    subsets = probe_report.nested_subsets(y)
    assert [int(y[rows].sum()) for rows in subsets] == [3, 6, 9, 12]
    assert [len(rows) - int(y[rows].sum()) for rows in subsets] == [7, 14, 21, 28]
    for small, large in zip(subsets, subsets[1:]):
        assert set(small) < set(large)
    assert probe_report.folds_for(y) == 5
    assert probe_report.folds_for(np.array([1, 1, 1, 0, 0, 0, 0])) == 3
    assert probe_report.folds_for(np.array([1, 0, 0, 0])) is None
