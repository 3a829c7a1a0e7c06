"""compare: both front-ends on two training-set fractions of the demo catalog, report files and plots."""

from __future__ import annotations

import json

import pytest
from featurized import TINY

from infra.demo.chain import COMPARE_FLAGS
from trainer import compare, compare_seeds

# The demo's own comparison settings (small networks, 8 epochs) on two of its fractions; argparse keeps
# the last --fractions.
DEMO_FLAGS = [*COMPARE_FLAGS, "--fractions", "0.5,1.0", "--seed", "0"]


def test_fractions_are_validated():
    assert compare.parse_fractions("1.0,0.1,0.3,0.1") == [0.1, 0.3, 1.0]
    for bad in ("", "0", "1.5", "a,b"):
        with pytest.raises(compare.TagscaleError, match="--fractions"):
            compare.parse_fractions(bad)


@pytest.mark.slow
def test_compare_both_frontends_learn_and_report(demo_features, tmp_path, capfd):
    features = demo_features
    out = tmp_path / "compare"
    assert compare.main(["--features", str(features), "--output", str(out), *DEMO_FLAGS]) == 0
    report = json.loads((out / "report.json").read_text())
    runs = {(row["fraction"], row["frontend"]): row for row in report["runs"]}
    assert set(runs) == {(f, e) for f in (0.5, 1.0) for e in ("waveform", "spectrogram")}
    for frontend in ("waveform", "spectrogram"):
        half, full = runs[(0.5, frontend)], runs[(1.0, frontend)]
        assert 0 < half["train_examples"] < full["train_examples"]
        assert full["roc_auc"] > 0.65, (
            frontend,
            full["roc_auc"],
        )  # chance is 0.5; seen: waveform 0.74, spectrogram 0.80
        assert full["pr_auc"] > 0.55 and full["params"] > 0 and full["train_time_s"] > 0
        assert len(full["history"]["val_loss"]) == full["epochs_trained"]
    # one test split for all runs
    assert len({json.dumps(row["test"]) for row in report["runs"]}) == 1
    md = (out / "report.md").read_text()
    assert "| fraction | front-end | training examples (tracks) | ROC-AUC | PR-AUC | parameters |" in md
    assert md.count("| waveform |") == 2 and md.count("| spectrogram |") == 2
    for name in (compare.PLOT_SIZE, compare.PLOT_CURVES):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 10_000
    printed = capfd.readouterr().out
    assert "spectrogram" in printed
    for run in ("waveform f0.5", "spectrogram f1"):  # a progress line per epoch per run, from the worker processes
        lines = [line for line in printed.splitlines() if line.startswith(f"[{run}] epoch ")]
        assert len(lines) == 8 and "val loss" in lines[-1] and "examples/s" in lines[-1], printed[-2000:]
    assert "early stopping" in md and "L2 weight decay 1e-05" in md and "init `variance-scaling`" in md

    # Run again: every finished run is reused (same settings), nothing is trained.
    stamps = {row["job_dir"]: (tmp_path / row["job_dir"] / "eval.json").stat().st_mtime_ns for row in report["runs"]}
    assert compare.main(["--features", str(features), "--output", str(out), *DEMO_FLAGS]) == 0
    again = json.loads((out / "report.json").read_text())
    assert [row["roc_auc"] for row in again["runs"]] == [row["roc_auc"] for row in report["runs"]]
    assert stamps == {
        row["job_dir"]: (tmp_path / row["job_dir"] / "eval.json").stat().st_mtime_ns for row in again["runs"]
    }


@pytest.mark.slow
def test_seeds_report_a_spread_and_steps_budget_equal_updates(demo_features, tmp_path):
    """Two seeds per arm: report.json keeps the mean under its usual keys and adds one value per seed;
    report.md prints the min-max; --budget steps runs the half fraction twice as many epochs."""
    from trainer import compare_seeds, inputs

    features = demo_features
    out = tmp_path / "seeds"
    flags = [*COMPARE_FLAGS, "--fractions", "0.25,0.5", "--frontends", "spectrogram", "--epochs", "1"]
    flags += ["--seeds", "2", "--budget", "steps", "--jobs", "1", "--seed", "3"]
    assert compare.main(["--features", str(features), "--output", str(out), *flags]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [(row["fraction"], row["frontend"]) for row in report["runs"]] == [(f, "spectrogram") for f in (0.25, 0.5)]
    args = compare.build_parser().parse_args(["--features", str(features), "--output", str(out), *flags])
    steps = compare_seeds.steps_per_epoch(args, inputs.open_features(str(features)), [0.25, 0.5])
    for row in report["runs"]:
        assert row["seeds"] == [3, 4] and len(row["roc_auc_runs"]) == len(row["pr_auc_runs"]) == 2
        assert row["roc_auc"] == pytest.approx(sum(row["roc_auc_runs"]) / 2)
        assert row["pr_auc"] == pytest.approx(sum(row["pr_auc_runs"]) / 2)
        assert row["roc_auc_runs"][0] != row["roc_auc_runs"][1]  # two seeds, two models
        assert len(row["job_dirs"]) == 2 and row["job_dirs"][1].endswith("-s4")
        low, high = min(row["roc_auc_runs"]), max(row["roc_auc_runs"])
        assert f"{row['roc_auc']:.3f} ({low:.3f}-{high:.3f})" in (out / "report.md").read_text()
        # every fraction about the same number of updates as the largest fraction's one epoch
        assert abs(row["epochs_trained"] * steps[row["fraction"]] - steps[0.5]) <= steps[row["fraction"]] / 2
    assert [row["epochs_trained"] for row in report["runs"]] == [2, 1]
    assert report["settings"]["seeds"] == 2 and report["settings"]["budget"] == "steps"
    assert "seeds 3-4 per arm" in (out / "report.md").read_text()
    # --collect over the same folder (no plan: every runs/ folder) merges each arm's seeds alike
    from infra.cloud import compare as compare_jobs

    collected, unfinished = compare_jobs.collect(str(out))
    assert unfinished == [] and [
        (row["fraction"], row["seeds"], row["roc_auc"], row["pr_auc_runs"]) for row in collected["runs"]
    ] == [(row["fraction"], row["seeds"], row["roc_auc"], row["pr_auc_runs"]) for row in report["runs"]]


LANES = """
import json, os, sys, types
from trainer import lanes
import lane_train
runs = [types.SimpleNamespace(fraction=f, kind=k) for f in (0.25, 1.0, 0.5) for k in ("a", "b")]
rows = lanes.run_all(runs, 2, lane_train.train, group=lambda run: run.kind)
print(json.dumps({"here": os.getpid(), "rows": rows}))
try:
    lanes.run_all(runs, 2, lane_train.fail_on_half)
except ValueError as error:
    print(json.dumps({"error": str(error)}))
"""

LANE_TRAIN = """
import os, time

def train(run):
    time.sleep(run.fraction)
    return {"fraction": run.fraction, "kind": run.kind, "pid": os.getpid()}

def fail_on_half(run):
    if run.fraction == 0.5:
        raise ValueError("run 0.5 failed")
    return train(run)
"""


def test_a_lane_takes_the_largest_waiting_run_of_its_last_runs_group():
    from trainer import lanes

    groups = ["wave", "spec", "wave", "spec", "wave"]  # runs 0..4; waiting: largest first
    pending = [0, 1, 2, 3, 4]
    assert lanes.next_run(pending, groups, "spec") == 1 and pending == [0, 2, 3, 4]
    assert lanes.next_run(pending, groups, "spec") == 3 and pending == [0, 2, 4]
    assert lanes.next_run(pending, groups, "spec") == 0 and pending == [2, 4]  # none left: the largest
    assert lanes.next_run(pending, groups, object()) == 2
    assert lanes.next_run(pending, groups, "wave") == 4 and lanes.next_run(pending, groups, "wave") is None


@pytest.mark.slow
def test_runs_at_once_use_this_process_as_one_lane(tmp_path):
    """Two jobs: this process trains runs itself while one worker process trains the others; each
    lane keeps to one group of runs; the rows come back in the runs' order, and a run's error
    reaches the caller."""
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    (tmp_path / "lane_train.py").write_text(LANE_TRAIN)
    out = subprocess.run(
        [sys.executable, "-c", LANES],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{tmp_path}"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    done, failed = (json.loads(line) for line in out.stdout.strip().splitlines()[-2:])
    assert [(row["fraction"], row["kind"]) for row in done["rows"]] == [
        (f, k) for f in (0.25, 1.0, 0.5) for k in ("a", "b")
    ]
    pids = {row["pid"] for row in done["rows"]}
    assert done["here"] in pids and len(pids) == 2, done  # this process and one worker
    by_kind = {kind: {row["pid"] for row in done["rows"] if row["kind"] == kind} for kind in "ab"}
    assert any(len(pids) == 1 for pids in by_kind.values()), done
    assert failed == {"error": "run 0.5 failed"}


def test_paired_differences_and_their_t_interval():
    from trainer import compare_report

    def row(fraction, frontend, roc, pr):
        return {"fraction": fraction, "frontend": frontend, "roc_auc_runs": roc, "pr_auc_runs": pr}

    runs = [
        row(0.5, "waveform", [0.70, 0.72], [0.50, 0.55]),
        row(0.5, "spectrogram", [0.72, 0.76], [0.52, 0.56]),
        row(1.0, "waveform", [0.80], [0.60]),
        row(1.0, "spectrogram", [0.79], [0.65]),
        row(0.1, "spectrogram", [0.6], [0.4]),  # no waveform arm: no pair
    ]
    half, full = compare_report.paired(runs)
    # differences 0.02 and 0.04: mean 0.03, sd 0.01414, t(0.975, 1 df) = 12.706 -> +- 0.12706
    assert half["fraction"] == 0.5 and half["n_seeds"] == 2
    assert half["roc_auc_diff_mean"] == pytest.approx(0.03)
    assert half["roc_auc_diff_ci95"] == pytest.approx([0.03 - 0.12706, 0.03 + 0.12706], abs=1e-5)
    assert half["pr_auc_diff_mean"] == pytest.approx(0.015)
    assert full == {
        "fraction": 1.0,
        "roc_auc_diff_mean": pytest.approx(-0.01),
        "roc_auc_diff_ci95": None,  # one seed: no interval
        "pr_auc_diff_mean": pytest.approx(0.05),
        "pr_auc_diff_ci95": None,
        "n_seeds": 1,
    }


@pytest.mark.slow
def test_each_seed_draws_its_own_subset_the_same_for_both_front_ends(small_features):
    from trainer import inputs

    features = inputs.open_features(str(small_features))
    first, second = (set(inputs.track_patches(features, "train", fraction=0.5, subset=k)) for k in (0, 1))
    assert first != second and abs(len(first) - len(second)) < 8  # another subset of about the same size
    assert set(inputs.track_patches(features, "train", fraction=0.25, subset=1)) <= second  # nested per subset
    args = compare.build_parser().parse_args(["--features", "f", "--output", "o", "--seeds", "3", "--seed", "5"])
    for frontend in ("waveform", "spectrogram"):
        runs = compare_seeds.seed_runs(compare.run_args(args, frontend, 0.5), 3)
        assert [(run.seed, run.subset) for run in runs] == [(5, 0), (6, 1), (7, 2)]


@pytest.mark.slow
def test_seeds_report_paired_differences_of_both_front_ends(small_features, tmp_path):
    out = tmp_path / "paired"
    flags = ["--fractions", "0.5,1.0", "--seeds", "2", "--epochs", "1", "--jobs", "1", *TINY]
    assert compare.main(["--features", str(small_features), "--output", str(out), *flags]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [entry["fraction"] for entry in report["paired"]] == [0.5, 1.0]
    runs = {(row["fraction"], row["frontend"]): row for row in report["runs"]}
    for entry in report["paired"]:
        assert set(entry) == {
            "fraction", "roc_auc_diff_mean", "roc_auc_diff_ci95", "pr_auc_diff_mean", "pr_auc_diff_ci95", "n_seeds"
        }  # fmt: skip
        assert entry["n_seeds"] == 2
        spectrogram, waveform = runs[(entry["fraction"], "spectrogram")], runs[(entry["fraction"], "waveform")]
        diffs = [a - b for a, b in zip(spectrogram["roc_auc_runs"], waveform["roc_auc_runs"])]
        assert entry["roc_auc_diff_mean"] == pytest.approx(sum(diffs) / 2)
        low, high = entry["roc_auc_diff_ci95"]
        assert low < entry["roc_auc_diff_mean"] < high
    # the half fraction's two seeds trained on two subsets, the same two for both front-ends
    evals = {
        (row["frontend"], k): json.loads((tmp_path / job / "eval.json").read_text())
        for row in report["runs"]
        if row["fraction"] == 0.5
        for k, job in enumerate(row["job_dirs"])
    }
    assert {k: evals[("waveform", k)]["train"] for k in (0, 1)} == {
        k: evals[("spectrogram", k)]["train"] for k in (0, 1)
    }
    assert [evals[("waveform", k)]["settings"]["subset"] for k in (0, 1)] == [0, 1]
    md = (out / "report.md").read_text()
    assert "Paired difference, spectrogram minus waveform" in md and "t-interval" in md
    assert "| 0.5 | 2 |" in md
