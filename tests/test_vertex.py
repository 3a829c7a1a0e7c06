"""submit-training --dry-run: the Vertex AI job spec, built offline without credentials."""

import json
import os
import subprocess
import sys


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
