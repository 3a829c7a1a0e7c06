"""probe_report: how many labels are enough, per tag (``report.json`` beside ``probe.json``).

    {"tags": {T: {"positives": p, "negatives": n, "cv_roc_auc": x, "cv_pr_auc": y,
                  "learning_curve": [{"labels": k, "roc_auc": a, "pr_auc": b}, ...]}}}

Every labelled tag gets an entry, also one with too few labels for ``probe train`` to fit it,
so a curator sees how far it is from enough. The scores are those of the probe's own model (a
standardised logistic regression) cross-validated with stratified k-fold over the labelled
tracks: k = min(5, the smaller class's count), shuffled with a fixed seed, and ROC-AUC and
PR-AUC computed once over the pooled held-out predictions. With fewer than 2 labels in either
class no split can hold out both, so the scores are null.

The learning curve repeats that on nested subsets of 25, 50, 75 and 100 % of the labels, drawn
per class (so each keeps the classes' ratio) from one seeded shuffle: every subset holds the
smaller ones, and a curve still rising at 100 % says more labels would help. A subset with
fewer than 2 labels in a class is left out of the curve; the 100 % point is the cross-validated
score itself.
"""

from __future__ import annotations

import json

import numpy as np

from pipelines.storage import fileio
from tagruns import tagdata

REPORT_FILE = "report.json"
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
MAX_FOLDS = 5


def folds_for(y: np.ndarray) -> int | None:
    """The k of stratified k-fold for 0/1 labels ``y``: min(5, the smaller class's count); None
    when that class has fewer than 2 (cross-validation needs both classes in every split)."""
    smaller = int(min(y.sum(), len(y) - y.sum()))
    return min(MAX_FOLDS, smaller) if smaller >= 2 else None


def cross_validated(x: np.ndarray, y: np.ndarray, *, c: float, seed: int = 0) -> tuple[float, float] | None:
    """``(roc_auc, pr_auc)`` of the probe's model over held-out predictions of stratified k-fold
    (k from :func:`folds_for`), rounded to 4 places; None when a class has fewer than 2 labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = folds_for(y)
    if k is None:
        return None
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000))
    splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    held_out = cross_val_predict(model, x, y, cv=splits, method="predict_proba")[:, 1]
    return round(float(roc_auc_score(y, held_out)), 4), round(float(average_precision_score(y, held_out)), 4)


def nested_subsets(y: np.ndarray, fractions=FRACTIONS, *, seed: int = 0) -> list[np.ndarray]:
    """Row indices of ``y`` for each fraction: per class the first round(fraction x count) of one
    seeded shuffle, so each subset keeps the classes' ratio and holds every smaller one."""
    rng = np.random.default_rng(seed)
    classes = [rng.permutation(np.flatnonzero(y == value)) for value in (1, 0)]
    return [
        np.sort(np.concatenate([rows[: int(round(fraction * len(rows)))] for rows in classes]))
        for fraction in fractions
    ]


def tag_report(x: np.ndarray, y: np.ndarray, *, c: float, seed: int = 0) -> dict:
    """One tag's entry of the report: counts, cross-validated scores and the learning curve."""
    scores = cross_validated(x, y, c=c, seed=seed)
    curve = []
    for rows in nested_subsets(y, seed=seed):
        point = scores if len(rows) == len(y) else cross_validated(x[rows], y[rows], c=c, seed=seed)
        if point is not None:
            curve.append({"labels": int(len(rows)), "roc_auc": point[0], "pr_auc": point[1]})
    return {
        "positives": int(y.sum()),
        "negatives": int(len(y) - y.sum()),
        "cv_roc_auc": None if scores is None else scores[0],
        "cv_pr_auc": None if scores is None else scores[1],
        "learning_curve": curve,
    }


def report(table: tagdata.TagTable, labels: dict[str, set[str]], *, c: float, seed: int = 0) -> dict:
    """The report over every tag of ``labels`` (track_id -> tags said yes to), on ``table``'s embeddings."""
    tags = sorted({tag for tagset in labels.values() for tag in tagset})
    rows, y = tagdata.label_matrix(table, labels, tags)
    x = table.embeddings[rows]
    return {"tags": {tag: tag_report(x, y[:, column], c=c, seed=seed) for column, tag in enumerate(tags)}}


def write_report(folder: str, document: dict) -> str:
    """Write ``folder/report.json``; returns its path."""
    path = fileio.join(folder, REPORT_FILE)
    fileio.write_text(path, json.dumps(document, indent=1) + "\n")
    return path


def format_curves(document: dict) -> str:
    """One line per tag: the labels it has and ROC-AUC at each point of its learning curve."""
    lines = []
    for tag, entry in sorted(document["tags"].items()):
        points = ", ".join(f"{p['labels']}: {p['roc_auc']:.3f}" for p in entry["learning_curve"]) or "too few labels"
        lines.append(f"{tag:<16} {entry['positives']} yes / {entry['negatives']} no; ROC-AUC by labels: {points}")
    return "\n".join(lines)
