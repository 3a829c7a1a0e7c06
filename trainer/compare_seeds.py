"""Several seeds per arm of the comparison, and an equal number of updates for every fraction.

At demo scale one run per arm says little: two seeds of one arm can differ by more than two
arms do. ``--seeds N`` trains every (front-end, fraction) arm N times, with seeds ``--seed``,
``--seed + 1``, ... and, for seed number ``k``, the ``k``-th hashed subset of the fraction's
size (``--subset k``; subset 0 is the one a single run takes): the same N subsets for both
front-ends, so the two arms are paired and the spread includes the subset's variance, which
matters most at small fractions. The report gives each arm's mean and spread (min-max) over the
seeds, and the paired difference per fraction (:mod:`trainer.compare_report`).
A fixed epoch count gives a small fraction proportionally fewer updates; ``--budget steps``
gives every fraction as many optimizer steps as the largest fraction's ``--epochs`` epochs.
"""

from __future__ import annotations

import copy

BUDGETS = ("epochs", "steps")


def seed_runs(run, seeds: int) -> list:
    """``run`` (the arm's first seed and subset 0, in its own folder name) and ``seeds - 1`` copies
    with the next seeds and subsets 1, 2, ..., each in ``NAME-sSEED`` beside it."""
    run.subset = 0
    runs = [run]
    for k in range(1, seeds):
        other = copy.copy(run)
        other.seed = run.seed + k
        other.subset = k
        other.job_dir = f"{run.job_dir}-s{other.seed}"
        other.label = f"{run.label} s{other.seed}"
        runs.append(other)
    return runs


def steps_per_epoch(args, features, fractions: list[float]) -> dict[float, int]:
    """``{fraction: optimizer steps in one epoch}`` under the recipe's ``--epoch-patches``."""
    from trainer import inputs, recipe

    steps = {}
    for fraction in fractions:
        counts = inputs.count_split(features, "train", fraction=fraction)
        steps[fraction] = -(-recipe.epoch_examples(args.epoch_patches, counts) // args.batch_size)
    return steps


def budget_epochs(epochs: int, steps_per_epoch: dict[float, int]) -> dict[float, int]:
    """``{fraction: epochs}`` so that every fraction takes about as many steps as the largest
    fraction in ``epochs`` epochs (``steps_per_epoch``: each fraction's steps in one epoch)."""
    largest = max(steps_per_epoch)
    total = epochs * steps_per_epoch[largest]
    return {fraction: max(1, round(total / max(steps, 1))) for fraction, steps in steps_per_epoch.items()}


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def merge(rows: list[dict]) -> dict:
    """One report row of an arm from its seeds' rows (``compare.report_row``): the scores, times
    and per-tag AUCs averaged, ``roc_auc_runs`` / ``pr_auc_runs`` one value per seed, the
    history, epochs and job folder of the first seed, every folder in ``job_dirs``."""
    merged = dict(rows[0])
    for key in ("roc_auc", "pr_auc"):
        merged[f"{key}_runs"] = [value for row in rows for value in row[f"{key}_runs"]]
        merged[key] = _mean(merged[f"{key}_runs"])
    merged["seeds"] = [seed for row in rows for seed in row["seeds"]]
    merged["train_time_s"] = _mean([row["train_time_s"] for row in rows])
    merged["job_dirs"] = [row["job_dir"] for row in rows]
    merged["per_tag"] = {
        tag: {
            **entry,
            **{key: _mean([row["per_tag"][tag][key] for row in rows]) for key in ("roc_auc", "pr_auc")},
        }
        for tag, entry in rows[0]["per_tag"].items()
    }
    return merged


def spread(row: dict, key: str) -> tuple[float, float] | None:
    """``(min, max)`` of ``key`` over the row's seeds; None with one seed or no value."""
    values = [v for v in row.get(f"{key}_runs", []) if v is not None]
    return (min(values), max(values)) if len(values) > 1 else None


def cell(row: dict, key: str, fmt) -> str:
    """A report.md cell: the mean, and its min-max over the seeds when there are several."""
    bounds = spread(row, key)
    return fmt(row[key]) + (f" ({fmt(bounds[0])}-{fmt(bounds[1])})" if bounds else "")
