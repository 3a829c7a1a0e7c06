"""compare --collect: the report of a comparison's finished arms, here on local arms made by `tagscale train`."""

from __future__ import annotations

import json

import pytest
from featurized import TINY

from infra import cli
from infra.cloud import compare as compare_jobs
from trainer import compare


@pytest.mark.slow
def test_collect_reports_the_finished_arms_and_lists_the_others(small_features, tmp_path, capsys):
    features = small_features
    root = tmp_path / "compare"
    arms = {"waveform-f1": ("waveform", "1"), "spectrogram-f0.5": ("spectrogram", "0.5")}
    for name, (frontend, fraction) in arms.items():
        code = cli.main(
            ["train", "--features", str(features), "--frontend", frontend, "--fraction", fraction, *TINY]
            + ["--epochs", "2", "--no-export", "--job-dir", str(root / "runs" / name)]
        )
        assert code == 0
    # As `--backend vertex` records them: two arms done, one never started, one started and not done.
    (root / "runs" / "waveform-f0.5").mkdir()
    (root / "runs" / "waveform-f0.5" / "history.json").write_text("{}")
    plan = [{"name": n, "job_dir": str(root / "runs" / n)} for n in [*arms, "waveform-f0.5", "spectrogram-f1"]]
    (root / compare_jobs.PLAN_FILE).write_text(json.dumps({"arms": plan}))
    capsys.readouterr()

    assert cli.main(["compare", "--collect", str(root)]) == 0
    printed = capsys.readouterr().out
    assert "not finished: waveform-f0.5, spectrogram-f1" in printed
    report = json.loads((root / "report.json").read_text())
    assert report["unfinished"] == ["waveform-f0.5", "spectrogram-f1"]
    assert [(row["fraction"], row["frontend"]) for row in report["runs"]] == [(0.5, "spectrogram"), (1.0, "waveform")]
    for row in report["runs"]:
        evaluation = json.loads((root / "runs" / f"{row['frontend']}-f{row['fraction']:g}" / "eval.json").read_text())
        assert (row["roc_auc"], row["pr_auc"], row["train_examples"]) == (
            evaluation["roc_auc"],
            evaluation["pr_auc"],
            evaluation["train"]["examples"],
        )
        assert row["history"]["epoch"] == [0, 1] and len(row["history"]["val_loss"]) == 2
    assert report["runs"][0]["train_examples"] < report["runs"][1]["train_examples"]
    assert report["settings"]["epochs"] == 2 and "fraction" not in report["settings"]
    assert set(report["settings"]["overrides"]) == {"waveform", "spectrogram"}
    md = (root / "report.md").read_text()
    assert md.count("| waveform |") == 1 and md.count("| spectrogram |") == 1
    assert "Not finished yet (no eval.json): `waveform-f0.5`, `spectrogram-f1`." in md
    for name in (compare.PLOT_SIZE, compare.PLOT_CURVES):
        assert (root / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Without the plan (a local comparison's OUT): every folder of runs/, the unfinished one listed.
    (root / compare_jobs.PLAN_FILE).unlink()
    report, unfinished = compare_jobs.collect(str(root))
    assert unfinished == ["waveform-f0.5"] and len(report["runs"]) == 2
    with pytest.raises(compare_jobs.TagscaleError, match="neither compare_jobs.json nor runs/"):
        compare_jobs.collect(str(tmp_path / "empty"))


def test_vertex_seeds_make_one_job_per_arm_and_seed(capsys):
    argv = ["--backend", "vertex", "--project", "p", "--image", "img", "--staging", "gs://b/compare"]
    argv += ["--features", "gs://b/f", "--fractions", "1", "--frontends", "spectrogram", "--seeds", "3"]
    assert compare_jobs.main([*argv, "--seed", "5", "--epochs", "2", "--dry-run"]) == 0
    arms = json.loads(capsys.readouterr().out)
    assert [arm["name"] for arm in arms] == ["spectrogram-f1", "spectrogram-f1-s6", "spectrogram-f1-s7"]
    for arm, seed in zip(arms, (5, 6, 7)):
        args = arm["custom_job"]["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"]
        assert args[args.index("--job-dir") + 1] == arm["job_dir"]
        assert [args[i + 1] for i, a in enumerate(args) if a == "--seed"][-1] == str(seed)  # the last one counts
        assert args[args.index("--subset") + 1] == str(seed - 5)  # seed number k: subset k, as a local comparison
        assert "--no-standardise" in args
