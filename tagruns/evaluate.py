"""evaluate: a tag run's scores against labels, with the metrics the field reports.

    tagscale evaluate --tags RUN --labels LABELS [--split test] [--json]

RUN is any tag output folder (``tagscale tag`` with a trained export or a pretrained musicnn
model, or ``tagscale probe apply``); its track-level scores are read from the Parquet files the
run's manifest lists. LABELS is either

- a catalog with a ``tags`` column (CSV, JSONL or Parquet, as ``tagscale featurize`` reads
  them, e.g. the output of ``tagscale catalog``): every row is a labelled track, and a track
  with no tags is a negative for every tag (MagnaTagATune's test split has many); ``--split``
  keeps only the rows of one split; or
- a labels file of ``tagscale calibrate`` (CSV ``track_id,tag``, one row per positive): the
  labelled tracks are those with at least one row; or
- a labels folder of ``tagscale explore --labels``: the latest verdict per track and tag, "yes"
  a positive; a track with only "no" verdicts is labelled, so a negative for every tag.

For each tag of the run's vocabulary whose labelled tracks in the run hold both positives and
negatives, ROC-AUC (``sklearn.metrics.roc_auc_score``) and PR-AUC (average precision,
``sklearn.metrics.average_precision_score``) over those tracks; ``roc_auc`` and ``pr_auc`` are
their unweighted means over the tags (macro averages, as musicnn reports). A tag with one class
only has no AUC and is listed in ``tags_left_out`` with the reason, as are labels the run has
no tag for.

``--json`` prints ``{"roc_auc", "pr_auc", "tracks", "tags", "per_tag": {TAG: {"roc_auc",
"pr_auc", "positives"}}, "tags_left_out": {TAG: REASON}, "tracks_left_out":
{"labelled_not_in_run", "in_run_not_labelled", "examples"}, "model", "labels", "split"}``:
``tracks`` and ``tags`` count what the means are over; ``examples`` names up to 10 labelled
tracks the run lacks.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

import numpy as np

from pipelines import catalog
from runtime.errors import TagscaleError
from tagruns import labels as label_store
from tagruns import tagdata

EXAMPLES = 10


def _first_line(path: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    try:
        if not FileSystems.match([path])[0].metadata_list:
            raise TagscaleError(f"cannot read labels {path}: file not found")
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            return handle.readline().decode("utf-8-sig")
    except TagscaleError:
        raise
    except UnicodeDecodeError as error:
        raise TagscaleError(f"{path}: labels are not UTF-8 text ({error.reason})") from None
    except Exception as error:  # file systems raise many types
        raise TagscaleError(f"cannot read labels {path}: {str(error).splitlines()[0]}") from None


def read_labels(path: str, split: str | None = None) -> dict[str, set[str]]:
    """LABELS (a catalog or a calibrate labels file, see the module docstring) -> track -> tags.

    Every labelled track is a key, with an empty set when it has no positive tag.

    Raises
    ------
    TagscaleError
        The file is missing or neither format, ``split`` is asked of a calibrate labels file,
        or no labelled track has a tag.
    """
    is_folder = "://" not in path and os.path.isdir(path)
    is_catalog = not is_folder and path.lower().endswith(tuple(catalog.FORMATS))
    if is_catalog and catalog.catalog_format(path) == "csv":
        header = [field.strip() for field in next(csv.reader([_first_line(path)]), [])]
        is_catalog = header[:2] != ["track_id", "tag"]
    if not is_catalog:
        if split is not None:
            kind = "labels folder" if is_folder else "track_id,tag labels file"
            raise TagscaleError(f"--split needs a catalog with a split column; {path} is a {kind}")
        return label_store.read_labels(path)
    labels: dict[str, set[str]] = {}
    for track in catalog.read_catalog(path):
        if split is None or track.split == split:
            labels.setdefault(track.track_id, set(track.tags))  # the first row of a repeated id, as featurize
    if not labels:
        raise TagscaleError(f"{path} has no tracks" + (f" in the {split} split" if split else ""))
    if not any(labels.values()):
        raise TagscaleError(f"{path}: no track has a tag (a labels catalog needs a tags column)")
    return labels


def evaluate(table: tagdata.TagTable, labels: dict[str, set[str]]) -> dict:
    """Macro and per-tag ROC-AUC / PR-AUC of ``table``'s scores on ``labels`` (module docstring)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    rows, y = tagdata.label_matrix(table, labels, table.tags)
    per_tag, left_out = {}, {}
    for column, tag in enumerate(table.tags):
        positives = int(y[:, column].sum())
        if positives == 0 or positives == len(rows):
            kind = "positives" if positives else "negatives"
            left_out[tag] = f"only {kind} among the {len(rows)} labelled tracks"
            continue
        scores = table.scores[rows, column]
        per_tag[tag] = {
            "roc_auc": float(roc_auc_score(y[:, column], scores)),
            "pr_auc": float(average_precision_score(y[:, column], scores)),
            "positives": positives,
        }
    vocabulary = set(table.tags)
    for tag in sorted({tag for tags in labels.values() for tag in tags} - vocabulary):
        left_out[tag] = "not a tag of the run"
    if not per_tag:
        raise TagscaleError(
            f"no tag of the run has both positive and negative labels among the {len(rows)} labelled tracks"
        )
    in_run = set(table.track_ids)
    missing = [track_id for track_id in labels if track_id not in in_run]
    return {
        "roc_auc": float(np.mean([entry["roc_auc"] for entry in per_tag.values()])),
        "pr_auc": float(np.mean([entry["pr_auc"] for entry in per_tag.values()])),
        "tracks": int(len(rows)),
        "tags": len(per_tag),
        "per_tag": per_tag,
        "tags_left_out": left_out,
        "tracks_left_out": {
            "labelled_not_in_run": len(missing),
            "in_run_not_labelled": len(table.track_ids) - int(len(rows)),
            "examples": missing[:EXAMPLES],
        },
        "model": table.model,
    }


def format_report(result: dict) -> str:
    """The table ``tagscale evaluate`` prints: the macro figures, then one line per tag."""
    lines = [
        f"ROC-AUC {result['roc_auc']:.4f}  PR-AUC {result['pr_auc']:.4f}  "
        f"(macro over {result['tags']} tags, {result['tracks']} tracks; model {result['model']['name']})",
        f"{'tag':<24} {'roc_auc':>7} {'pr_auc':>7} {'positives':>9}",
    ]
    for tag, entry in sorted(result["per_tag"].items(), key=lambda item: -item[1]["roc_auc"]):
        lines.append(f"{tag:<24} {entry['roc_auc']:>7.4f} {entry['pr_auc']:>7.4f} {entry['positives']:>9}")
    if result["tags_left_out"]:
        lines.append(f"tags left out ({len(result['tags_left_out'])}):")
        lines += [f"  {tag}: {reason}" for tag, reason in sorted(result["tags_left_out"].items())]
    tracks = result["tracks_left_out"]
    if tracks["labelled_not_in_run"]:
        lines.append(
            f"labelled tracks not in the run (left out): {tracks['labelled_not_in_run']}, "
            f"e.g. {', '.join(tracks['examples'])}"
        )
    if tracks["in_run_not_labelled"]:
        lines.append(f"tracks of the run without labels (left out): {tracks['in_run_not_labelled']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tagscale evaluate",
        description="Macro and per-tag ROC-AUC and PR-AUC of a tag run against labels (track level; tags with "
        "both classes in the labels). Reads only tag output.",
    )
    parser.add_argument("--tags", required=True, help="a tag output folder (`tagscale tag`, trained or pretrained)")
    parser.add_argument(
        "--labels",
        required=True,
        help="a catalog with a tags column (.csv/.jsonl/.parquet; untagged rows are negatives) "
        "or a calibrate labels CSV track_id,tag (one row per positive) or a labels folder of `explore --labels`",
    )
    parser.add_argument("--split", choices=catalog.SPLITS, help="only the catalog rows of this split")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    labels = read_labels(args.labels, args.split)
    result = evaluate(tagdata.load(args.tags), labels)
    result.update(labels=args.labels, split=args.split)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


if __name__ == "__main__":
    from runtime.errors import run_command

    sys.exit(run_command("evaluate", main))
