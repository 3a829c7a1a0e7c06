"""calibrate: one decision threshold per tag, at a target precision on labelled tracks.

    tagscale calibrate --tags DIR --labels labels.csv|LABELS_DIR --precision 0.8 --output THRESHOLDS

``labels.csv`` is ``track_id,tag``, one row per positive; a tag's negatives are the labelled
tracks without it. A labels folder of ``tagscale explore --labels`` reads the same way (its
latest verdicts; a "no" makes the track labelled, so a negative). For each tag of the run's
vocabulary with enough labels the threshold is the lowest score at which the labelled tracks
scoring at or above it reach the target precision, so recall is as high as that precision
allows. One global cut-off fits no tag: a model's scores for a rare tag and a common one live on different scales.

THRESHOLDS is JSON: ``{"target_precision", "model": {"name", "version"}, "tags": {TAG:
{"threshold", "precision", "recall", "support"}}, "insufficient_labels": [TAG, ...],
"unreachable": [TAG, ...]}``; ``unreachable`` tags have enough labels but no threshold reaches
the target. ``tagscale query ... --thresholds THRESHOLDS`` applies it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from pipelines.storage import fileio, outputs
from runtime.errors import TagscaleError
from tagruns import labels as label_store
from tagruns import tagdata


def threshold_at_precision(y: np.ndarray, scores: np.ndarray, target: float) -> dict | None:
    """The lowest threshold whose precision on ``(y, scores)`` is at least ``target``.

    Returns
    -------
    dict or None
        ``{"threshold", "precision", "recall", "support"}``, or None when no threshold reaches
        the target.
    """
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, scores)
    # precision/recall have one more entry than thresholds (the point recall 0); drop it.
    meets = np.flatnonzero(precision[:-1] >= target)
    if not len(meets):
        return None
    best = meets[0]  # thresholds ascend, so the first that meets the target keeps the most recall
    return {
        "threshold": float(thresholds[best]),
        "precision": round(float(precision[best]), 4),
        "recall": round(float(recall[best]), 4),
        "support": int(y.sum()),
    }


def calibrate(
    table: tagdata.TagTable,
    labels: dict[str, set[str]],
    *,
    target: float,
    min_positives: int = 5,
    min_negatives: int = 5,
) -> dict:
    """The THRESHOLDS document for ``table`` and ``labels`` (see the module docstring)."""
    if not 0 < target <= 1:
        raise TagscaleError(f"--precision must be in (0, 1], got {target}")
    rows, y = tagdata.label_matrix(table, labels, table.tags)
    broken = ~np.isfinite(table.scores[rows]).all(axis=1)
    if broken.any():
        names = [table.track_ids[row] for row in np.asarray(rows)[broken][:3]]
        raise TagscaleError(
            f"{int(broken.sum())} labelled tracks have scores that are not numbers (NaN or inf), "
            f"e.g. {', '.join(names)}: the tag output is damaged; tag those tracks again"
        )
    result = {
        "target_precision": target,
        "model": table.model,
        "tags": {},
        "insufficient_labels": [],
        "unreachable": [],
    }
    for column, tag in enumerate(table.tags):
        positives = int(y[:, column].sum())
        if positives < min_positives or len(rows) - positives < min_negatives:
            result["insufficient_labels"].append(tag)
            continue
        found = threshold_at_precision(y[:, column], table.scores[rows, column], target)
        if found is None:
            result["unreachable"].append(tag)
        else:
            result["tags"][tag] = found
    result["labelled_tracks"] = int(len(rows))
    result["labels_not_in_vocabulary"] = sorted({tag for tags in labels.values() for tag in tags} - set(table.tags))
    return result


def load_thresholds(path: str) -> dict[str, float]:
    """Read a THRESHOLDS file written by ``tagscale calibrate``: tag -> threshold.

    Raises
    ------
    TagscaleError
        When the file is missing or is not a THRESHOLDS document, or a threshold is not a
        number from 0 to 1 (:func:`parse_threshold`).
    """
    try:
        document = json.loads(fileio.read_text(path))
    except Exception as error:
        raise TagscaleError(f"cannot read thresholds {path}: {str(error).splitlines()[0]}") from error
    tags = document.get("tags") if isinstance(document, dict) else None
    if not isinstance(tags, dict) or not all(
        isinstance(entry, dict) and "threshold" in entry for entry in tags.values()
    ):
        raise TagscaleError(f"{path} is not a thresholds file of `tagscale calibrate` (no tags -> threshold)")
    return {tag: parse_threshold(entry["threshold"], tag, path) for tag, entry in tags.items()}


def parse_threshold(value, tag: str, source: str) -> float:
    """``value`` as a threshold: a finite number from 0 to 1 (JSON's NaN, Infinity, 1e999999,
    null or text are not). Every threshold read (a THRESHOLDS file, ``--threshold``) comes here.

    Raises
    ------
    TagscaleError
        Naming ``source`` (the file or flag) and the tag.
    """
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not 0 <= value <= 1:
        raise TagscaleError(f"{source}: the threshold of tag {tag!r} must be a number from 0 to 1, got {value!r}")
    return float(value)


def format_report(result: dict) -> str:
    """The table `tagscale calibrate` prints."""
    lines = [f"{'tag':<16} {'threshold':>9} {'precision':>9} {'recall':>6} {'support':>7}"]
    for tag, entry in sorted(result["tags"].items(), key=lambda item: -item[1]["recall"]):
        lines.append(
            f"{tag:<16} {entry['threshold']:>9.4f} {entry['precision']:>9.3f} "
            f"{entry['recall']:>6.3f} {entry['support']:>7}"
        )
    lines.append(
        f"{len(result['tags'])} tags calibrated at precision >= {result['target_precision']} "
        f"on {result['labelled_tracks']} labelled tracks"
    )
    if result["unreachable"]:
        lines.append(f"precision {result['target_precision']} not reachable: {', '.join(result['unreachable'])}")
    if result["insufficient_labels"]:
        lines.append(
            f"not enough labels ({len(result['insufficient_labels'])} tags): {', '.join(result['insufficient_labels'])}"
        )
    if result["labels_not_in_vocabulary"]:
        lines.append(f"labels the model has no tag for (ignored): {', '.join(result['labels_not_in_vocabulary'])}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tagscale calibrate",
        description="Pick a threshold per tag at a target precision on labelled tracks; write THRESHOLDS (JSON). "
        "Reads only tag output.",
    )
    parser.add_argument(
        "--tags", required=True, help="a tag output folder (of `tagscale tag` or `tagscale probe apply`)"
    )
    parser.add_argument(
        "--labels",
        required=True,
        help="CSV track_id,tag, one row per positive, or a labels folder of `tagscale explore --labels` "
        "(yes: a positive, no: a negative); the negatives of a tag are the labelled tracks without it",
    )
    parser.add_argument("--precision", type=float, default=0.8, help="target precision (%(default)s)")
    parser.add_argument(
        "--min-positives",
        type=int,
        default=5,
        help="fewer labelled positives (or negatives) -> listed as insufficient_labels (%(default)s)",
    )
    parser.add_argument(
        "--output",
        required=True,
        help="THRESHOLDS JSON file to write (local or gs://); an existing file is replaced only if it is one",
    )
    return parser


def _is_thresholds(path: str) -> bool:
    try:
        load_thresholds(path)
    except TagscaleError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = outputs.check_output_file(args.output, replaceable=_is_thresholds, what="thresholds file")
    table = tagdata.load(args.tags)
    result = calibrate(
        table,
        label_store.read_labels(args.labels),
        target=args.precision,
        min_positives=args.min_positives,
        min_negatives=args.min_positives,
    )
    fileio.write_text(output, json.dumps(result, indent=2) + "\n")
    print(format_report(result))
    print(f"-> {output}")
    return 0


if __name__ == "__main__":
    from runtime.errors import run_command

    sys.exit(run_command("calibrate", main))
