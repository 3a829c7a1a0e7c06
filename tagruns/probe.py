"""probe: new tags from a few labels, as linear probes on a run's embeddings.

    tagscale probe train --tags DIR --labels labels.csv|LABELS_DIR --output PROBE [--name NAME]
    tagscale probe apply --tags DIR --probe PROBE --output DIR2

``train`` fits one scikit-learn logistic regression (standardised embedding -> tag) per tag of
``labels.csv`` (``track_id,tag``, one row per positive; a tag's negatives are the labelled
tracks without it; or a labels folder of ``tagscale explore --labels``, read by
:func:`tagruns.labels.read_labels`) and reports cross-validated ROC-AUC and PR-AUC per tag. PROBE is a folder
with ``probe.json``: the weights as plain numbers (no pickle: any reader can apply them, and
loading one runs no code), the source model and the metrics, and ``report.json``: per labelled
tag, cross-validated scores and a learning curve (:mod:`tagruns.probe_report`). ``apply`` scores every track of
DIR and writes ``DIR2/tags/*.parquet`` in the tag schema, with the probe's tags, model name =
the probe's name and the track's embedding, so ``query``, ``similar``, ``calibrate`` and
``diff`` work on it. Neither decodes audio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import numpy as np

from pipelines.storage import fileio, outputs, ownership, publish
from runfolder import layout, manifest, schema, writer
from runtime.errors import TagscaleError
from tagruns import labels as label_store
from tagruns import probe_report, tagdata

PROBE_FILE = "probe.json"


def fit_tag(x: np.ndarray, y: np.ndarray, *, c: float = 0.1, folds: int = 5, seed: int = 0) -> dict:
    """Cross-validate and fit one probe; returns its weights and metrics.

    ``c`` is the inverse L2 strength: with a few dozen labels and 200 dimensions a strong
    penalty keeps the probe from memorising the labelled tracks.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model():
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000))

    splits = StratifiedKFold(n_splits=min(folds, int(y.sum()), int(len(y) - y.sum())), shuffle=True, random_state=seed)
    held_out = cross_val_predict(model(), x, y, cv=splits, method="predict_proba")[:, 1]
    fitted = model().fit(x, y)
    scaler, regression = fitted[0], fitted[1]
    return {
        "mean": scaler.mean_.astype(np.float32).tolist(),
        "scale": scaler.scale_.astype(np.float32).tolist(),
        "coef": regression.coef_[0].astype(np.float32).tolist(),
        "intercept": float(regression.intercept_[0]),
        "cv_roc_auc": round(float(roc_auc_score(y, held_out)), 4),
        "cv_pr_auc": round(float(average_precision_score(y, held_out)), 4),
        "cv_folds": splits.n_splits,
        "positives": int(y.sum()),
        "negatives": int(len(y) - y.sum()),
    }


def train(
    table: tagdata.TagTable, labels: dict[str, set[str]], *, name: str, min_positives: int = 5, c: float = 0.1
) -> dict:
    """The probe document: one probe per labelled tag with enough positives and negatives."""
    tags = sorted({tag for tagset in labels.values() for tag in tagset})
    rows, y = tagdata.label_matrix(table, labels, tags)
    x = table.embeddings[rows]
    probes, skipped = {}, []
    for column, tag in enumerate(tags):
        positives = int(y[:, column].sum())
        if positives < min_positives or len(rows) - positives < min_positives:
            skipped.append(tag)
            continue
        probes[tag] = fit_tag(x, y[:, column], c=c)
    if not probes:
        raise TagscaleError(
            f"no tag has {min_positives} labelled positives and negatives "
            f"among the {len(rows)} labelled tracks of the run"
        )
    weights = json.dumps(
        {tag: [p["mean"], p["scale"], p["coef"], p["intercept"]] for tag, p in probes.items()}, sort_keys=True
    )
    return {
        "name": name,
        "version": hashlib.sha256((table.model["version"] + weights).encode()).hexdigest()[:12],
        "source_model": table.model,
        "dim": int(table.embeddings.shape[1]),
        "labelled_tracks": int(len(rows)),
        "labelled_not_in_run": sum(1 for track_id in labels if track_id not in set(table.track_ids)),
        "tags": probes,
        "insufficient_labels": skipped,
    }


def probe_scores(probe: dict, embeddings: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The probe's tags and their probabilities for each row of ``embeddings``."""
    tags = sorted(probe["tags"])
    logits = np.stack(
        [
            ((embeddings - np.asarray(p["mean"])) / np.asarray(p["scale"])) @ np.asarray(p["coef"]) + p["intercept"]
            for p in (probe["tags"][t] for t in tags)
        ],
        axis=1,
    )
    return tags, (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def read_probe(path: str) -> dict:
    """Read ``PROBE/probe.json``; :class:`TagscaleError` when it is not a probe."""
    file = fileio.join(path.rstrip("/"), PROBE_FILE)
    try:
        probe = json.loads(fileio.read_text(file))
    except Exception as error:
        raise TagscaleError(f"cannot read probe {file}: {str(error).splitlines()[0]}") from error
    if not isinstance(probe, dict) or not {"name", "version", "source_model", "tags"} <= set(probe):
        raise TagscaleError(f"{file} is not a probe written by `tagscale probe train`")
    for tag in probe["tags"] if isinstance(probe["tags"], dict) else ():
        try:  # a hand-edited probe's tags are held to the rules of the labels they came from
            if label_store.check_tag(tag) != tag:
                raise TagscaleError(f"tag {tag!r} is not spelled as labels store it (NFC, no blanks around)")
        except TagscaleError as error:
            raise TagscaleError(f"{file}: {error}") from None
    return probe


def apply(table: tagdata.TagTable, probe: dict, output: str, *, inputs: tuple[str, ...] = ()) -> str:
    """Score ``table`` with ``probe``; write ``output/tags/`` in the tag schema; return the file.

    ``output`` must pass the same check as tag's (:func:`pipelines.storage.outputs.check_output`; it
    must not be or contain ``inputs``), as the publish replaces ``output/tags/``.
    """
    output = outputs.check_output(output, entries=(layout.TAGS,), inputs=inputs)
    if table.model["version"] != probe["source_model"]["version"]:
        raise TagscaleError(
            f"the probe was trained on embeddings of {probe['source_model']['name']} "
            f"version {probe['source_model']['version']}, "
            f"this run is {table.model['name']} version {table.model['version']}"
        )
    tags, scores = probe_scores(probe, table.embeddings)
    rows = (
        schema.tag_row(
            track_id=track_id,
            uri=table.uris[i],
            model_name=probe["name"],
            model_version=probe["version"],
            duration_s=table.durations[i],
            n_patches=table.n_patches[i],
            tags=tags,
            scores=scores[i],
            embedding=table.embeddings[i],
        )
        for i, track_id in enumerate(table.track_ids)
    )
    run_id = publish.new_run_id(probe["version"])
    name = f"probe-{run_id}.parquet"
    # As a full tag run: one run per output, written aside and published with its manifest last,
    # so a failed apply leaves the previous tags as they were and nothing foreign is deleted.
    with publish.staged_run(
        output, "probe apply", entries=[layout.TAGS], commit=layout.COMMIT, run_id=run_id
    ) as staging:
        writer.write_file(staging.path(layout.TAGS, name), rows)
        manifest.write_tags_manifest(staging.path(layout.TAGS), [name], run_id=run_id)
    return fileio.join(output, layout.TAGS, name)


def format_metrics(probe: dict) -> str:
    lines = [f"{'tag':<16} {'cv ROC-AUC':>10} {'cv PR-AUC':>9} {'positives':>9} {'negatives':>9}"]
    for tag, p in sorted(probe["tags"].items()):
        lines.append(
            f"{tag:<16} {p['cv_roc_auc']:>10.3f} {p['cv_pr_auc']:>9.3f} {p['positives']:>9} {p['negatives']:>9}"
        )
    if probe["insufficient_labels"]:
        lines.append(f"not enough labels: {', '.join(probe['insufficient_labels'])}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tagscale probe", description="Linear probes on a run's embeddings: new tags from a few labels."
    )
    commands = parser.add_subparsers(dest="action", required=True)
    train_parser = commands.add_parser(
        "train",
        help="fit one logistic regression per labelled tag; report cross-validated ROC-AUC and PR-AUC "
        "and a learning curve per tag (PROBE/report.json)",
    )
    train_parser.add_argument("--tags", required=True, help="a tag output folder (local or gs://)")
    train_parser.add_argument(
        "--labels",
        required=True,
        help="CSV track_id,tag, one row per positive, or a labels folder of `tagscale explore --labels` "
        "(its latest verdicts: yes is a positive, no a negative); a tag's negatives are the labelled tracks without it",
    )
    train_parser.add_argument("--output", required=True, help=f"PROBE folder to write (probe.json); {outputs.RULES}")
    train_parser.add_argument(
        "--name", help="the probe's name, the model name of `probe apply` output (default: the PROBE folder's name)"
    )
    train_parser.add_argument(
        "--min-positives",
        type=int,
        default=5,
        help="tags with fewer labelled positives or negatives are skipped (%(default)s)",
    )
    train_parser.add_argument("--c", type=float, default=0.1, help="inverse L2 regularisation strength (%(default)s)")
    apply_parser = commands.add_parser("apply", help="score every track of a run with a probe; write tag Parquet")
    apply_parser.add_argument("--tags", required=True, help="the tag output folder whose embeddings the probe reads")
    apply_parser.add_argument("--probe", required=True, help="a PROBE folder of `probe train`")
    apply_parser.add_argument(
        "--output", required=True, help=f"output folder: OUTPUT/tags/*.parquet (replaced); {outputs.RULES}"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.action == "train" and not args.c > 0:
        raise TagscaleError(f"--c must be a positive number (the inverse regularisation strength), got {args.c}")
    if args.action == "train" and args.min_positives < 2:
        raise TagscaleError(
            f"--min-positives must be at least 2 (cross-validation needs 2 folds), got {args.min_positives}"
        )
    table = tagdata.load(args.tags)
    if args.action == "train":
        # PROBE is checked like every output before the training; it gets the marker once trained.
        folder = outputs.check_output(args.output, entries=(PROBE_FILE,), inputs=(args.tags, args.labels))
        name = args.name or os.path.basename(os.path.normpath(folder)) or "probe"
        labels = label_store.read_labels(args.labels)
        probe = train(table, labels, name=name, min_positives=args.min_positives, c=args.c)
        ownership.mark(folder)
        fileio.write_text(fileio.join(folder, PROBE_FILE), json.dumps(probe) + "\n")
        # Beside the probe: per tag, whether more labels would still help (tagruns.probe_report).
        report = probe_report.report(table, labels, c=args.c)
        report_path = probe_report.write_report(folder, report)
        print(format_metrics(probe))
        print(probe_report.format_curves(report))
        print(
            f"probe {probe['name']} ({len(probe['tags'])} tags, {probe['labelled_tracks']} labelled tracks) "
            f"-> {fileio.join(folder, PROBE_FILE)}; learning curves -> {report_path}"
        )
        return 0
    probe = read_probe(args.probe)
    path = apply(table, probe, args.output, inputs=(args.tags, args.probe))
    print(
        f"scored {len(table.track_ids)} tracks with probe {probe['name']} "
        f"({', '.join(sorted(probe['tags']))}) -> {path}"
    )
    return 0


if __name__ == "__main__":
    from runtime.errors import run_command

    sys.exit(run_command("probe", main))
