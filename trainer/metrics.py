"""Track-level evaluation: patch scores -> track scores -> per-tag and macro ROC-AUC / PR-AUC.

A track's score for a tag is the mean of its patches' sigmoid outputs (as musicnn and the
paper evaluate). ROC-AUC is the Mann-Whitney statistic with tied scores counted half;
PR-AUC is average precision (the step-wise area of scikit-learn's ``average_precision_score``).
Tags with no positive or no negative test track have no AUC: they are left out of the macro
averages and listed.
"""

from __future__ import annotations

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` with ties given their average rank (like scipy's rankdata)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # start index of each run of equal values
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    run_ranks = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.repeat(run_ranks, ends - starts)
    return ranks


def roc_auc(y_true, y_score) -> float:
    """Area under the ROC curve for one binary label; NaN when one class is absent."""
    y_true = np.asarray(y_true) > 0.5
    positives, negatives = int(y_true.sum()), int((~y_true).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = average_ranks(y_score)
    return float((ranks[y_true].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def average_precision(y_true, y_score) -> float:
    """PR-AUC as average precision: sum over thresholds of (recall step) x precision; NaN without positives."""
    y_true = np.asarray(y_true) > 0.5
    y_score = np.asarray(y_score, dtype=np.float64)
    positives = int(y_true.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-y_score, kind="mergesort")
    scores, hits = y_score[order], y_true[order]
    # one threshold per distinct score: the last index of each run of equal scores
    last = np.r_[np.flatnonzero(scores[1:] != scores[:-1]), len(scores) - 1]
    true_positives = np.cumsum(hits)[last]
    precision = true_positives / (last + 1.0)
    recall = true_positives / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def track_scores(track_ids, labels, scores) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Average patch scores per track.

    Parameters
    ----------
    track_ids : sequence of str or bytes, length n_patches
    labels : np.ndarray, shape (n_patches, n_tags)
        Every patch of a track carries the track's labels.
    scores : np.ndarray, shape (n_patches, n_tags)

    Returns
    -------
    (ids, track_labels, track_scores)
        Sorted track ids; (n_tracks, n_tags) labels and mean scores.
    """
    ids = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in track_ids]
    unique, inverse = np.unique(np.asarray(ids, dtype=object).astype(str), return_inverse=True)
    labels = np.asarray(labels, np.float64)
    scores = np.asarray(scores, np.float64)
    counts = np.bincount(inverse, minlength=len(unique)).astype(np.float64)
    sums = np.zeros((len(unique), scores.shape[1]))
    np.add.at(sums, inverse, scores)
    track_labels = np.zeros((len(unique), labels.shape[1]))
    track_labels[inverse] = labels  # identical for all patches of a track
    return [str(u) for u in unique], track_labels, sums / counts[:, None]


def tag_report(labels: np.ndarray, scores: np.ndarray, tags: list[str]) -> dict:
    """Per-tag and macro ROC-AUC / PR-AUC of track-level ``scores`` against ``labels``.

    Returns
    -------
    dict
        ``roc_auc`` / ``pr_auc``: macro means over the tags that have both positive and
        negative tracks (NaN -> None when there is none); ``per_tag``: {tag: {roc_auc, pr_auc,
        positives, negatives}}; ``excluded_tags``: tags left out (no positives or no negatives);
        ``evaluated_tags``: how many entered the macro.
    """
    labels = np.asarray(labels) > 0.5
    per_tag, excluded, rocs, prs = {}, [], [], []
    for index, tag in enumerate(tags):
        positives = int(labels[:, index].sum())
        negatives = int(len(labels) - positives)
        entry = {"positives": positives, "negatives": negatives, "roc_auc": None, "pr_auc": None}
        if positives == 0 or negatives == 0:
            excluded.append(tag)
        else:
            entry["roc_auc"] = roc_auc(labels[:, index], scores[:, index])
            entry["pr_auc"] = average_precision(labels[:, index], scores[:, index])
            rocs.append(entry["roc_auc"])
            prs.append(entry["pr_auc"])
        per_tag[tag] = entry
    return {
        "roc_auc": float(np.mean(rocs)) if rocs else None,
        "pr_auc": float(np.mean(prs)) if prs else None,
        "evaluated_tags": len(rocs),
        "excluded_tags": excluded,
        "per_tag": per_tag,
    }
