"""submit-training --dry-run: the Vertex AI job spec, built offline without credentials."""

import json
import os
import subprocess
import sys

import pytest


def run_cli(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOOGLE_")}
    env["GOOGLE_APPLICATION_CREDENTIALS"] = "/nonexistent/credentials.json"
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", "submit-training", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_dry_run_prints_the_job_spec_without_credentials():
    result = run_cli(
        "--project",
        "proj",
        "--region",
        "europe-west4",
        "--image",
        "europe-docker.pkg.dev/proj/tagscale/trainer:0.1.0",
        "--job-dir",
        "gs://bucket/jobs/j1",
        "--accelerator",
        "NVIDIA_L4",
        "--accelerator-count",
        "2",
        "--machine-type",
        "g2-standard-24",
        "--dry-run",
        "--",
        "--features",
        "gs://bucket/features",
        "--frontend",
        "waveform",
    )
    assert result.returncode == 0, result.stderr
    spec = json.loads(result.stdout)
    pool = spec["custom_job"]["jobSpec"]["workerPoolSpecs"][0]
    assert spec["region"] == "europe-west4"
    assert pool["machineSpec"] == {
        "machineType": "g2-standard-24",
        "acceleratorType": "NVIDIA_L4",
        "acceleratorCount": 2,
    }
    assert pool["containerSpec"]["command"] == ["python", "-m", "trainer.task"]
    assert pool["containerSpec"]["args"] == [
        "--features",
        "gs://bucket/features",
        "--frontend",
        "waveform",
        "--job-dir",
        "gs://bucket/jobs/j1",
    ]
    assert spec["custom_job"]["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"] == "gs://bucket/jobs/j1"


def test_bad_job_dir_and_accelerator_are_one_line_errors():
    base = ["--project", "p", "--image", "i", "--dry-run"]
    result = run_cli(*base, "--job-dir", "/tmp/local")
    assert result.returncode == 2 and "must be a gs:// path" in result.stderr and "Traceback" not in result.stderr
    result = run_cli(*base, "--job-dir", "gs://b/j", "--accelerator", "GTX_1080")
    assert result.returncode == 2 and "unknown --accelerator GTX_1080" in result.stderr


def test_workers_add_a_worker_pool_beside_the_chief():
    args = ["--project", "p", "--image", "img", "--job-dir", "gs://b/j", "--dry-run"]
    trainer = ["--", "--features", "gs://b/f", "--frontend", "spectrogram"]
    result = run_cli(*args, "--workers", "3", *trainer)
    assert result.returncode == 0, result.stderr
    chief, workers = json.loads(result.stdout)["custom_job"]["jobSpec"]["workerPoolSpecs"]
    assert (chief["replicaCount"], workers["replicaCount"]) == ("1", "2")  # int64 fields print as strings
    assert chief["containerSpec"] == workers["containerSpec"] and chief["machineSpec"] == workers["machineSpec"]
    assert chief["containerSpec"]["args"] == ["--features", "gs://b/f", "--frontend", "spectrogram"] + [
        "--job-dir",
        "gs://b/j",
    ]
    single = json.loads(run_cli(*args, *trainer).stdout)["custom_job"]["jobSpec"]["workerPoolSpecs"]
    assert len(single) == 1 and single[0]["replicaCount"] == "1"
    result = run_cli(*args, "--workers", "0", *trainer)
    assert (
        result.returncode == 2 and "--workers must be at least 1" in result.stderr and "Traceback" not in result.stderr
    )


def run_compare(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOOGLE_")}
    env["GOOGLE_APPLICATION_CREDENTIALS"] = "/nonexistent/credentials.json"
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", "compare", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.slow
def test_compare_on_vertex_dry_run_prints_one_job_per_arm():
    common = ["--backend", "vertex", "--project", "p", "--region", "europe-west4", "--image", "img"]
    common += ["--staging", "gs://b/compare", "--features", "gs://b/features"]
    result = run_compare(*common, "--fractions", "1,0.25", "--epochs", "7", "--workers", "2", "--dry-run")
    assert result.returncode == 0, result.stderr
    arms = json.loads(result.stdout)
    assert [(arm["frontend"], arm["fraction"]) for arm in arms] == [
        ("waveform", 0.25),
        ("spectrogram", 0.25),
        ("waveform", 1.0),
        ("spectrogram", 1.0),
    ]
    for arm in arms:
        assert arm["name"] == f"{arm['frontend']}-f{arm['fraction']:g}"
        assert arm["job_dir"] == f"gs://b/compare/runs/{arm['name']}"
        spec = arm["custom_job"]["jobSpec"]
        assert arm["region"] == "europe-west4" and spec["baseOutputDirectory"]["outputUriPrefix"] == arm["job_dir"]
        assert [pool["replicaCount"] for pool in spec["workerPoolSpecs"]] == ["1", "1"]  # --workers 2 per arm
        assert spec["workerPoolSpecs"][0]["containerSpec"]["args"] == [
            "--features",
            "gs://b/features",
            "--frontend",
            arm["frontend"],
            "--fraction",
            f"{arm['fraction']:g}",
            "--subset",
            "0",
            "--no-standardise",
            "--epochs",
            "7",
            "--no-export",
            "--job-dir",
            arm["job_dir"],
        ]
    assert len({arm["custom_job"]["displayName"] for arm in arms}) == 4

    for bad, message in (
        (["--staging", "/tmp/x"], "--staging must be a gs:// path"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--fractions", "2"], "--fractions"),
    ):
        result = run_compare(*common, *bad, "--dry-run")
        assert result.returncode == 2 and message in result.stderr, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("tagscale compare")]
        assert "Traceback" not in result.stderr and len(errors) == 1, result.stderr


def test_the_job_flags_are_declared_once_for_submit_training_and_compare():
    """Both commands take the Vertex AI job flags from one declaration: same names, defaults, types, help."""
    import argparse

    from infra.cloud import compare, vertex

    shared = argparse.ArgumentParser(add_help=False)
    vertex.add_job_arguments(shared)
    assert {"project", "region", "image", "machine_type", "accelerator", "workers", "staging_bucket"} <= {
        action.dest for action in shared._actions
    }
    for parser in (vertex.build_parser(), compare.build_parser()):
        actions = {action.dest: action for action in parser._actions}
        for want in shared._actions:
            got = actions[want.dest]
            fields = ("option_strings", "default", "type", "required", "help")
            assert [getattr(got, f) for f in fields] == [getattr(want, f) for f in fields], (parser.prog, want.dest)
