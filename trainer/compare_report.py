"""The comparison's report: report.md, its plots, and the paired difference of the two front-ends.

With ``--seeds N`` the seed number ``k`` of every arm trains on the same ``k``-th subset of its
fraction (:mod:`trainer.compare_seeds`), so at each fraction the spectrogram and waveform runs of
seed ``k`` are a pair. :func:`paired` reports, per fraction, the mean over the N pairs of the
difference spectrogram minus waveform and its 95 % t-interval (Student's t with N - 1 degrees of
freedom on the N paired differences: mean +- t * sd / sqrt(N)); with N = 1 there is no interval.
With few seeds the interval is wide (t is 12.7 for N = 2, 4.3 for N = 3): it says what the seeds
can carry, no more.
"""

from __future__ import annotations

import json
import math

from trainer import compare_seeds

PLOT_SIZE = "auc_vs_training_size.png"
PLOT_CURVES = "learning_curves.png"
PAIRED_FROM, PAIRED_TO = "spectrogram", "waveform"  # the difference is spectrogram minus waveform


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, list[float] | None]:
    """``(mean, [low, high])`` of ``values``: Student's t interval of the mean; None for one value."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, [mean - half, mean + half]


def paired(runs: list[dict]) -> list[dict]:
    """Per fraction with both front-ends: the paired differences spectrogram minus waveform over
    the seeds (seed ``k`` of one arm against seed ``k`` of the other: the same subset)."""
    out = []
    for fraction in sorted({row["fraction"] for row in runs}):
        arms = {row["frontend"]: row for row in runs if row["fraction"] == fraction}
        if PAIRED_FROM not in arms or PAIRED_TO not in arms:
            continue
        entry = {"fraction": fraction}
        for key in ("roc_auc", "pr_auc"):
            pairs = zip(arms[PAIRED_FROM][f"{key}_runs"], arms[PAIRED_TO][f"{key}_runs"])
            diffs = [a - b for a, b in pairs if a is not None and b is not None]
            mean, interval = t_interval(diffs) if diffs else (None, None)
            entry[f"{key}_diff_mean"], entry[f"{key}_diff_ci95"] = mean, interval
        entry["n_seeds"] = min(len(arms[PAIRED_FROM]["roc_auc_runs"]), len(arms[PAIRED_TO]["roc_auc_runs"]))
        out.append(entry)
    return out


def paired_lines(report: dict) -> list[str]:
    """report.md's table of the paired differences (none without both front-ends)."""
    rows = report.get("paired") or []
    if not rows:
        return []

    def cell(entry, key):
        interval = entry[f"{key}_diff_ci95"]
        text = _fmt(entry[f"{key}_diff_mean"], signed=True)
        return text + (f" [{_fmt(interval[0], signed=True)}, {_fmt(interval[1], signed=True)}]" if interval else "")

    lines = [
        "",
        "Paired difference, spectrogram minus waveform (seed k of both front-ends trains on the same subset "
        "of the fraction): mean over the seeds and its 95 % t-interval (Student's t over the paired "
        "differences; none with one seed). An interval that contains 0 does not tell the front-ends apart.",
        "",
        "| fraction | seeds | ROC-AUC difference [95 % CI] | PR-AUC difference [95 % CI] |",
        "|---:|---:|---:|---:|",
    ]
    lines += [f"| {e['fraction']:g} | {e['n_seeds']} | {cell(e, 'roc_auc')} | {cell(e, 'pr_auc')} |" for e in rows]
    return lines


def _fmt(value, digits: int = 3, *, signed: bool = False) -> str:
    return "n/a" if value is None else f"{value:{'+' if signed else ''}.{digits}f}"


def lr_text(settings: dict) -> str:
    """The learning-rate rule of ``settings`` in words (runs from before ``lr_schedule`` used plateau;
    ``seed`` is the old name of ``cumulative``)."""
    factor, patience = settings["lr_plateau_factor"], settings["lr_plateau_patience"]
    if settings.get("lr_schedule", "plateau") in ("cumulative", "seed"):
        return (
            f"learning rate x{factor:g} after the validation that follows each {patience} more validations "
            "that have not beaten the best loss (`--lr-schedule cumulative`, musicnn-training's rule: improvements "
            "do not reset the count)"
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
        + (
            "per-band log-mel standardisation on (the waveform is not standardised), "
            if settings.get("standardise", True)
            else "no input standardisation (raw log-mel and raw waveform alike), "
        )
        + f"batch-norm momentum {settings['batch_norm_momentum'] or 'Keras default (0.99)'}, "
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
    lines += paired_lines(report)
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

    pairs = report.get("paired") or []
    figure, axes = plt.subplots(1, 3 if pairs else 2, figsize=(15 if pairs else 10, 4))
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
    if pairs:
        plot_paired(axes[2], pairs, runs)
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


def plot_paired(axis, pairs: list[dict], runs: list[dict]) -> None:
    """The paired differences against training examples, with their 95 % t-intervals as bars."""
    examples = {row["fraction"]: row["train_examples"] for row in runs if row["frontend"] == PAIRED_FROM}
    for key, title, offset in (("roc_auc", "ROC-AUC", 0.98), ("pr_auc", "PR-AUC", 1.02)):
        points = [e for e in pairs if e[f"{key}_diff_mean"] is not None]
        xs = [examples.get(e["fraction"], e["fraction"]) * offset for e in points]
        means = [e[f"{key}_diff_mean"] for e in points]
        bounds = [e[f"{key}_diff_ci95"] or [m, m] for e, m in zip(points, means)]
        axis.errorbar(
            xs,
            means,
            yerr=[[m - b[0] for m, b in zip(means, bounds)], [b[1] - m for m, b in zip(means, bounds)]],
            fmt="o-",
            capsize=3,
            label=f"{title} difference",
        )
    axis.axhline(0.0, color="gray", linestyle=":", linewidth=1)
    if len(examples) > 1 and max(examples.values()) / max(min(examples.values()), 1) >= 5:
        axis.set_xscale("log")
    axis.set_xlabel("training examples (patches)")
    axis.set_ylabel("spectrogram - waveform")
    axis.set_title("paired difference, 95 % t-interval over seeds")
    axis.grid(alpha=0.3)
    axis.legend()


def _save(figure, output: str, name: str) -> str:
    import io

    import tensorflow as tf

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    path = f"{output.rstrip('/')}/{name}"
    with tf.io.gfile.GFile(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return path
