"""submit-training: run ``python -m trainer.task`` as a Vertex AI custom job on GPUs.

    tagscale submit-training --project P --region us-central1 \\
        --image us-docker.pkg.dev/P/tagscale/trainer:0.1.0 \\
        --job-dir gs://BUCKET/jobs/spectrogram-1 \\
        --machine-type n1-standard-8 --accelerator NVIDIA_TESLA_T4 --accelerator-count 1 \\
        -- --features gs://BUCKET/features --frontend spectrogram --epochs 30

Everything after ``--`` goes to the trainer unchanged (``--job-dir`` is added for you).
``--dry-run`` prints the job spec as JSON and needs no credentials; without it the job is
submitted with google-cloud-aiplatform and its name and console link are printed.

``--workers N`` (N > 1) trains on N machines: a chief pool (1 replica) and a worker pool of
N - 1 replicas of the same machine and image. Vertex AI gives every replica a ``TF_CONFIG``
naming them all, and the trainer then runs under ``MultiWorkerMirroredStrategy`` (only the
chief writes the job directory; see :mod:`trainer.multiworker`).
"""

from __future__ import annotations

import argparse
import json
import sys

from runtime.errors import TagscaleError

CONSOLE = "https://console.cloud.google.com/vertex-ai/locations/{region}/training/{job_id}/cpu?project={project}"


def build_job(args: argparse.Namespace):
    """The ``aiplatform_v1.CustomJob`` message for these arguments (no network, no credentials)."""
    from google.cloud.aiplatform_v1.types import (
        AcceleratorType,
        ContainerSpec,
        CustomJob,
        CustomJobSpec,
        GcsDestination,
        MachineSpec,
        Scheduling,
        WorkerPoolSpec,
    )

    if not args.job_dir.startswith("gs://"):
        raise TagscaleError(f"--job-dir must be a gs:// path that the job can write, got {args.job_dir}")
    if args.accelerator not in AcceleratorType.__members__:
        names = ", ".join(n for n in AcceleratorType.__members__ if n.startswith("NVIDIA"))
        raise TagscaleError(f"unknown --accelerator {args.accelerator}; choose one of {names}")
    trainer_args = list(args.trainer_args)
    if trainer_args[:1] == ["--"]:
        trainer_args = trainer_args[1:]
    if "--job-dir" not in trainer_args:
        trainer_args += ["--job-dir", args.job_dir]
    workers = getattr(args, "workers", 1)
    if workers < 1:
        raise TagscaleError(f"--workers must be at least 1, got {workers}")
    machine = MachineSpec(machine_type=args.machine_type)
    if args.accelerator_count > 0:
        machine.accelerator_type = AcceleratorType[args.accelerator]
        machine.accelerator_count = args.accelerator_count

    def pool(replicas: int):
        container = ContainerSpec(image_uri=args.image, command=["python", "-m", "trainer.task"], args=trainer_args)
        return WorkerPoolSpec(machine_spec=machine, replica_count=replicas, container_spec=container)

    # Vertex AI's first pool is the chief; every replica of both pools runs the same trainer.
    pools = [pool(1)] + ([pool(workers - 1)] if workers > 1 else [])
    return CustomJob(
        display_name=args.display_name,
        job_spec=CustomJobSpec(
            worker_pool_specs=pools,
            base_output_directory=GcsDestination(output_uri_prefix=args.job_dir),
            scheduling=Scheduling(restart_job_on_worker_restart=True),  # the trainer resumes from its checkpoint
            service_account=args.service_account or "",
        ),
    )


def job_spec_json(job) -> dict:
    from google.cloud.aiplatform_v1.types import CustomJob

    return json.loads(CustomJob.to_json(job, use_integers_for_enums=False, including_default_value_fields=False))


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The Vertex AI job flags: declared here once for ``submit-training`` and ``compare --backend vertex``."""
    parser.add_argument("--project", required=True)
    parser.add_argument("--region", default="us-central1")
    parser.add_argument("--image", required=True, help="the trainer image (Dockerfile target `trainer`)")
    parser.add_argument("--machine-type", default="n1-standard-8")
    parser.add_argument("--accelerator", default="NVIDIA_TESLA_T4")
    parser.add_argument(
        "--accelerator-count", type=int, default=1, help="GPUs; more than one trains with MirroredStrategy"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="machines per job (1): more adds a worker pool of N-1 replicas beside the chief; "
        "the trainer uses MultiWorkerMirroredStrategy",
    )
    parser.add_argument("--service-account", default=None)
    parser.add_argument(
        "--staging-bucket", default=None, help="gs:// bucket for Vertex staging (default: the job dir's bucket)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tagscale submit-training",
        description="Submit trainer.task as a Vertex AI custom job. Arguments after -- go to the trainer.",
    )
    add_job_arguments(parser)
    parser.add_argument(
        "--job-dir", required=True, help="gs:// directory for checkpoints, TensorBoard logs, eval.json and export/"
    )
    parser.add_argument("--display-name", default="tagscale-train")
    parser.add_argument("--dry-run", action="store_true", help="print the job spec as JSON; no credentials needed")
    parser.add_argument("trainer_args", nargs=argparse.REMAINDER, help="-- then the trainer's flags")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    job = build_job(args)
    spec = job_spec_json(job)
    if args.dry_run:
        print(json.dumps({"project": args.project, "region": args.region, "custom_job": spec}, indent=2))
        return 0
    submit(job, args)
    return 0


def submit(job, args) -> str:
    """Submit ``job`` (from :func:`build_job`) without waiting for it; prints and returns its resource name."""
    try:
        from google.cloud import aiplatform
    except ImportError as error:
        raise TagscaleError("google-cloud-aiplatform is not installed: pip install 'tagscale[cloud]'") from error
    import google.auth.exceptions

    staging = args.staging_bucket or "gs://" + args.job_dir[len("gs://") :].split("/")[0]
    try:
        aiplatform.init(project=args.project, location=args.region, staging_bucket=staging)
        custom_job = aiplatform.CustomJob(
            display_name=job.display_name,
            worker_pool_specs=list(job.job_spec.worker_pool_specs),
            base_output_dir=args.job_dir,
        )
        custom_job.submit(service_account=args.service_account, restart_job_on_worker_restart=True)
    except google.auth.exceptions.DefaultCredentialsError as error:
        raise TagscaleError(f"no Google credentials: run `gcloud auth application-default login` ({error})") from error
    job_id = custom_job.resource_name.rsplit("/", 1)[-1]
    print(f"submitted {custom_job.resource_name}")
    print(CONSOLE.format(region=args.region, job_id=job_id, project=args.project))
    return custom_job.resource_name


if __name__ == "__main__":
    from runtime.errors import run_command

    sys.exit(run_command("submit-training", main))
