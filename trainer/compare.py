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
from trainer import compare_seeds, flags, lanes, task

LOG = logging.getLogger("tagscale.compare")
PLOT_SIZE = "auc_vs_training_size.png"
PLOT_CURVES = "learning_curves.png"


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


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def lr_text(settings: dict) -> str:
    """The learning-rate rule of ``settings`` in words (runs from before ``lr_schedule`` used plateau)."""
    factor, patience = settings["lr_plateau_factor"], settings["lr_plateau_patience"]
    if settings.get("lr_schedule", "plateau") == "seed":
        return (
            f"learning rate x{factor:g} each time {patience} more validations have not beaten the best loss "
            "(`--lr-schedule seed`, musicnn-training's rule: improvements do not reset the count)"
        )
    return (
        f"learning rate x{factor:g} after {patience} epochs without a validation loss lower by 1e-4 "
        "(`--lr-schedule plateau`, Keras' ReduceLROnPlateau)"
    )


def recipe_text(settings: dict) -> str:
    """The full training recipe of ``settings`` (run_settings) in one sentence."""
    stopping = settings.get("early_stopping_patience")
    budget = settings.get("budget", "epochs")
    return (
        f"preset `{settings['preset']}`, Adam lr {settings['learning_rate']:g}, batch {settings['batch_size']}, "
        f"L2 weight decay {settings['weight_decay']:g}, {lr_text(settings)}, {settings['epochs']} epochs "
        + ("(of the largest fraction; the others as many updates, `--budget steps`) " if budget == "steps" else "")
        + (f"(early stopping after {stopping} epochs without improvement)" if stopping else "(no early stopping)")
        + f", the model of the lowest validation loss kept, validation every {settings['validation_freq']} epoch(s), "
        f"epoch patches `{settings['epoch_patches']}`, init `{settings['init']}`, "
        + (
            f"seeds {settings['seed']}-{settings['seed'] + settings['seeds'] - 1} per arm, "
            if settings.get("seeds", 1) > 1
            else f"seed {settings['seed']}, "
        )
        + f"per-band input standardisation {'on' if settings.get('standardise', True) else 'off'}, "
        f"batch-norm momentum {settings['batch_norm_momentum'] or 'Keras default (0.99)'}, "
        f"shuffle buffer {settings['shuffle_buffer']}"
    )


def markdown(report: dict) -> str:
    """``report.md``: settings, the table, the plots."""
    settings = report["settings"]
    lines = [
        "# Front-end comparison: waveform vs spectrogram",
        "",
        f"Features: `{report['features']}` ({report['test']['tracks']} test tracks, "
        f"{report['test']['examples']} test patches, "
        f"{report['n_tags']} tags). Track-level scores (mean of patch scores); macro averages over the tags with "
        f"positive and negative test tracks"
        f"{'; excluded: ' + ', '.join(report['excluded_tags']) if report['excluded_tags'] else ''}.",
        "",
        "Recipe: " + recipe_text(settings) + ".",
        "",
        "Size overrides (NetworkConfig fields): "
        + (
            "; ".join(f"{frontend}: `{json.dumps(o)}`" for frontend, o in settings["overrides"].items() if o)
            or "none (preset sizes)"
        )
        + ".",
        "",
        "| fraction | front-end | training examples (tracks) | ROC-AUC | PR-AUC | "
        "parameters | epochs | training time (s) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["runs"]:
        lines.append(
            f"| {row['fraction']:g} | {row['frontend']} | {row['train_examples']} ({row['train_tracks']}) | "
            f"{compare_seeds.cell(row, 'roc_auc', _fmt)} | "
            f"{compare_seeds.cell(row, 'pr_auc', _fmt)} | {row['params']:,} | {row['epochs_trained']} | "
            f"{row['train_time_s']:.1f} |"
        )
    if any(compare_seeds.spread(row, "roc_auc") for row in report["runs"]):
        lines += ["", "ROC-AUC and PR-AUC: the mean over the arm's seeds, (min-max) over them; time: the mean."]
    lines += ["", f"![test AUC against training-set size]({PLOT_SIZE})", "", f"![learning curves]({PLOT_CURVES})", ""]
    return "\n".join(lines)


def plot(report: dict, output: str) -> list[str]:
    """The two PNGs (matplotlib Agg); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    frontends = sorted({row["frontend"] for row in runs})
    fractions = sorted({row["fraction"] for row in runs})
    colors = {"waveform": "tab:blue", "spectrogram": "tab:orange"}
    paths = []

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key, title in zip(axes, ("roc_auc", "pr_auc"), ("ROC-AUC", "PR-AUC")):
        for frontend in frontends:
            rows = sorted(
                (r for r in runs if r["frontend"] == frontend and r[key] is not None), key=lambda r: r["train_examples"]
            )
            bounds = [compare_seeds.spread(r, key) or (r[key], r[key]) for r in rows]
            axis.errorbar(  # the bars: min-max over the seeds (none with one seed)
                [r["train_examples"] for r in rows],
                [r[key] for r in rows],
                yerr=[[r[key] - b[0] for r, b in zip(rows, bounds)], [b[1] - r[key] for r, b in zip(rows, bounds)]],
                fmt="o-",
                capsize=3,
                color=colors.get(frontend),
                label=frontend,
            )
        if key == "roc_auc":
            axis.axhline(0.5, color="gray", linestyle=":", linewidth=1, label="chance")
        if len(fractions) > 1 and max(fractions) / min(fractions) >= 5:
            axis.set_xscale("log")
        axis.set_xlabel("training examples (patches)")
        axis.set_ylabel(f"test {title} (macro, track level)")
        axis.set_title(f"{title} against training-set size")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    paths.append(_save(figure, output, PLOT_SIZE))
    plt.close(figure)

    figure, axes = plt.subplots(1, len(frontends), figsize=(5 * len(frontends), 4), squeeze=False, sharey=True)
    cmap = plt.get_cmap("viridis")
    for axis, frontend in zip(axes[0], frontends):
        for i, fraction in enumerate(fractions):
            row = next((r for r in runs if r["frontend"] == frontend and r["fraction"] == fraction), None)
            if not row or not row["history"].get("epoch"):
                continue
            color = cmap(i / max(1, len(fractions) - 1) * 0.85)
            epochs = [e + 1 for e in row["history"]["epoch"]]
            axis.plot(epochs, row["history"]["loss"], "--", color=color, label=f"train, fraction {fraction:g}")
            axis.plot(epochs, row["history"]["val_loss"], "-", color=color, label=f"valid, fraction {fraction:g}")
        axis.set_title(f"{frontend}: binary cross-entropy per epoch")
        axis.set_xlabel("epoch")
        axis.set_ylabel("loss")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    paths.append(_save(figure, output, PLOT_CURVES))
    plt.close(figure)
    return paths


def _save(figure, output: str, name: str) -> str:
    import io

    import tensorflow as tf

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    path = f"{output.rstrip('/')}/{name}"
    with tf.io.gfile.GFile(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return path


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
    }
    report["settings"].pop("fraction", None)
    report = json.loads(json.dumps(report))  # tuples -> lists, as written
    with tf.io.gfile.GFile(f"{args.output.rstrip('/')}/report.json", "w") as handle:
        json.dump(report, handle, indent=2)
    report["plots"] = plot(report, args.output)
    with tf.io.gfile.GFile(f"{args.output.rstrip('/')}/report.md", "w") as handle:
        handle.write(markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = compare(args)
    print(
        f"{'fraction':>8} {'front-end':<12} {'examples':>8} {'ROC-AUC':>8} {'PR-AUC':>8} {'params':>10} {'time s':>7}"
    )
    for row in report["runs"]:
        print(
            f"{row['fraction']:>8g} {row['frontend']:<12} {row['train_examples']:>8} {_fmt(row['roc_auc']):>8} "
            f"{_fmt(row['pr_auc']):>8} {row['params']:>10,} {row['train_time_s']:>7.1f}"
        )
    print(f"wrote {args.output.rstrip('/')}/report.md, report.json, {PLOT_SIZE}, {PLOT_CURVES}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    from runtime.errors import run_command

    sys.exit(run_command("compare", main))
