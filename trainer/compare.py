"""The front-end comparison (the paper's central experiment): waveform vs spectrogram models
trained on growing fractions of the same training set, evaluated on the same test tracks.

    tagscale compare --features FEATURES --output OUT [--fractions 0.1,0.3,1.0] [--epochs N] [--seed S]
        [--seeds N] [--budget epochs|steps]

Every (fraction, front-end) run is a :func:`trainer.task.train_and_evaluate` job in
``OUT/runs/{frontend}-f{fraction}/`` with the same recipe and seed; a run whose ``eval.json``
exists with the same settings is reused, so a killed comparison picks up where it stopped
(and a killed run resumes from its last epoch). With ``--seeds N`` every arm is trained N times
(:mod:`trainer.compare_seeds`), the later seeds in ``OUT/runs/{frontend}-f{fraction}-s{seed}/``,
and the report gives the mean and the min-max over the seeds. Writes::

    OUT/report.json                  every run: examples, ROC-AUC, PR-AUC, per tag, params, time, history
    OUT/report.md                    the table, with the plots
    OUT/auc_vs_training_size.png     test ROC-AUC and PR-AUC against training examples, per front-end
    OUT/learning_curves.png          training / validation loss per epoch, per front-end and fraction
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys

from model.features import FRONTENDS
from runtime.errors import TagscaleError
from trainer import compare_report, compare_seeds, flags, lanes, task
from trainer.compare_report import PLOT_CURVES, PLOT_SIZE

LOG = logging.getLogger("tagscale.compare")


def parse_fractions(text: str) -> list[float]:
    try:
        fractions = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise TagscaleError(f"--fractions must be comma-separated numbers in (0, 1], got {text!r}") from None
    if not fractions:
        raise TagscaleError(f"--fractions must be comma-separated numbers in (0, 1], got {text!r}")
    from trainer.inputs import check_fraction  # the one fraction check

    try:
        return [check_fraction(f) for f in fractions]
    except TagscaleError as error:
        raise TagscaleError(f"--fractions {text!r}: {error}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tagscale compare",
        description="Train both front-ends on each fraction of the training set; report test ROC-AUC / PR-AUC "
        "against training-set size (OUT/report.md, report.json, PNG plots).",
    )
    parser.add_argument("--features", required=True, help="featurize output directory (local or gs://)")
    parser.add_argument("--output", required=True, help="report directory; runs go to OUTPUT/runs/")
    parser.add_argument(
        "--fractions", default="0.1,0.3,1.0", help="training-set fractions, comma-separated (0.1,0.3,1.0)"
    )
    parser.add_argument("--frontends", default="waveform,spectrogram", help="front-ends to compare (both)")
    parser.add_argument("--export", action="store_true", help="also export a serving model per run")
    parser.add_argument(
        "--export-runs",
        default="",
        help="export only these runs, comma-separated run names as in OUTPUT/runs/ (e.g. spectrogram-f1)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs trained at once, each with cores/jobs threads: this process and jobs-1 worker processes "
        "(default: 1 with a GPU, else up to the number of cores, at most 4)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="train every arm this many times, with seeds --seed, --seed+1, ...; the report gives each arm's "
        "mean and min-max (1)",
    )
    parser.add_argument(
        "--budget",
        choices=compare_seeds.BUDGETS,
        default="epochs",
        help="epochs: every fraction runs --epochs epochs; steps: every fraction takes as many updates as the "
        "largest fraction in --epochs epochs (smaller fractions run more epochs) (epochs)",
    )
    flags.add_training_flags(parser)
    # Both front-ends alike: the waveform has no per-band standardisation to match the log-mel's, so
    # the comparison reads the log-mel as computed too (the seed's input), unless --standardise.
    parser.set_defaults(standardise=False)
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2), help="Keras fit verbosity per run (0)")
    return parser


def run_args(args, frontend: str, fraction: float) -> argparse.Namespace:
    """The ``tagscale train`` arguments of one run of the comparison."""
    run = copy.copy(args)
    run.frontend = frontend
    run.fraction = fraction
    name = f"{frontend}-f{fraction:g}"
    run.job_dir = f"{args.output.rstrip('/')}/runs/{name}"
    run.export = args.export or name in export_names(args)
    run.label = f"{frontend} f{fraction:g}"
    return run


def export_names(args) -> set[str]:
    return {name.strip() for name in (getattr(args, "export_runs", "") or "").split(",") if name.strip()}


def run_one(args) -> dict:
    """Train and evaluate one run (or reuse its finished eval.json with equal settings); its report row."""
    from trainer import callbacks, inputs

    done = callbacks.read_json(f"{args.job_dir}/eval.json", None)
    expected = task.run_settings(args, flags.network_overrides(args, args.frontend))
    if (
        done
        and all(done.get("settings", {}).get(k) == v for k, v in expected.items())
        and done.get("features") == inputs.open_features(args.features, [args.frontend]).path
    ):
        LOG.info("reusing %s", args.job_dir)
        evaluation, history = done, callbacks.read_history(f"{args.job_dir}/history.json")
    else:
        result = task.train_and_evaluate(args, keep=True)  # the next run of this network reuses its model
        evaluation, history = result.evaluation, result.history
    LOG.info("%s", task.summary_line(evaluation))
    return report_row(evaluation, history, args.job_dir, args.fraction)


def report_row(evaluation: dict, history: dict, job_dir: str, fraction: float) -> dict:
    """One run's row of report.json, from its eval.json and history (here or collected from jobs)."""
    return {
        "fraction": fraction,
        "frontend": evaluation["frontend"],
        "seeds": [evaluation.get("settings", {}).get("seed")],
        "roc_auc_runs": [evaluation["roc_auc"]],
        "pr_auc_runs": [evaluation["pr_auc"]],
        "train_tracks": evaluation["train"]["tracks"],
        "train_examples": evaluation["train"]["examples"],
        "roc_auc": evaluation["roc_auc"],
        "pr_auc": evaluation["pr_auc"],
        "params": evaluation["params"],
        "train_time_s": evaluation["train_time_s"],
        "epochs_trained": evaluation["epochs_trained"],
        "best_epoch": evaluation["best_epoch"],
        "per_tag": evaluation["per_tag"],
        "excluded_tags": evaluation["excluded_tags"],
        "test": evaluation["test"],
        "job_dir": job_dir,
        "history": {
            k: v
            for k, v in history.items()
            if k in ("epoch", "loss", "val_loss", "roc_auc", "val_roc_auc", "epoch_time_s")
        },
    }


def compare(args) -> dict:
    """Run every (fraction, front-end) job, then write the report files; returns report.json's contents."""
    import tensorflow as tf

    from trainer import inputs

    fractions = parse_fractions(args.fractions)
    frontends = [f.strip() for f in args.frontends.split(",") if f.strip()]
    unknown = sorted(set(frontends) - set(FRONTENDS))
    if unknown or not frontends:
        raise TagscaleError(f"--frontends must name some of {', '.join(FRONTENDS)}, got {args.frontends!r}")
    exporting = args.export or any(name.startswith("spectrogram-") for name in export_names(args))
    features = inputs.open_features(args.features, frontends, need_transform=exporting and "spectrogram" in frontends)
    tf.io.gfile.makedirs(args.output)
    args.features = features.path
    if args.seeds < 1:
        raise TagscaleError(f"--seeds must be at least 1, got {args.seeds}")
    epochs = {fraction: args.epochs for fraction in fractions}
    if args.budget == "steps":
        epochs = compare_seeds.budget_epochs(args.epochs, compare_seeds.steps_per_epoch(args, features, fractions))
    arms = [run_args(args, frontend, fraction) for fraction in fractions for frontend in frontends]
    planned = []
    for arm in arms:
        arm.epochs = epochs[arm.fraction]
        planned += compare_seeds.seed_runs(arm, args.seeds)
    jobs = args.jobs if args.jobs is not None else lanes.default_jobs(len(planned))
    if jobs < 1:
        raise TagscaleError(f"--jobs must be at least 1, got {jobs}")
    rows = lanes.run_all(planned, jobs, run_one, group=lambda run: run.frontend)
    runs = [compare_seeds.merge(rows[i : i + args.seeds]) for i in range(0, len(rows), args.seeds)]
    first = runs[0]
    report = {
        "features": features.path,
        "tags": features.tags,
        "n_tags": features.n_tags,
        "test": first["test"],
        "excluded_tags": first["excluded_tags"],
        "fractions": fractions,
        "frontends": frontends,
        "settings": {
            **task.run_settings(run_args(args, frontends[0], 1.0), {}),
            "seeds": args.seeds,
            "budget": args.budget,
            "epochs_per_fraction": {f"{fraction:g}": epochs[fraction] for fraction in fractions},
            "overrides": {frontend: flags.network_overrides(args, frontend) for frontend in frontends},
        },
        "runs": runs,
        "paired": compare_report.paired(runs),
    }
    report["settings"].pop("fraction", None)
    report["settings"].pop("subset", None)
    report = json.loads(json.dumps(report))  # tuples -> lists, as written
    with tf.io.gfile.GFile(f"{args.output.rstrip('/')}/report.json", "w") as handle:
        json.dump(report, handle, indent=2)
    report["plots"] = compare_report.plot(report, args.output)
    with tf.io.gfile.GFile(f"{args.output.rstrip('/')}/report.md", "w") as handle:
        handle.write(compare_report.markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = compare(args)
    print(
        f"{'fraction':>8} {'front-end':<12} {'examples':>8} {'ROC-AUC':>8} {'PR-AUC':>8} {'params':>10} {'time s':>7}"
    )
    fmt = compare_report._fmt
    for row in report["runs"]:
        print(
            f"{row['fraction']:>8g} {row['frontend']:<12} {row['train_examples']:>8} {fmt(row['roc_auc']):>8} "
            f"{fmt(row['pr_auc']):>8} {row['params']:>10,} {row['train_time_s']:>7.1f}"
        )
    print(f"wrote {args.output.rstrip('/')}/report.md, report.json, {PLOT_SIZE}, {PLOT_CURVES}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    from runtime.errors import run_command

    sys.exit(run_command("compare", main))
