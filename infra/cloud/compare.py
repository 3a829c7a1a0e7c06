"""``tagscale compare``: the front-end comparison here (trainer.compare), as parallel Vertex AI jobs,
or the report of jobs that finished.

    tagscale compare --features F --output OUT [...]                   every arm here, one process
    tagscale compare --backend vertex --project P --region R --image IMAGE \\
        --staging gs://BUCKET/compare --features gs://BUCKET/features [--fractions 0.1,0.3,1.0] [--dry-run]
    tagscale compare --collect gs://BUCKET/compare                     report.md / report.json / plots

``--backend vertex`` submits one Vertex AI custom job (:func:`infra.cloud.vertex.build_job`) per
(front-end, fraction) arm, all at once, each training into ``STAGING/runs/{frontend}-f{fraction}/``
(the layout of a local comparison's ``OUT/runs/``), and records the arms in
``STAGING/compare_jobs.json``. Training flags (``--epochs``, ``--preset``, size overrides, ...)
go to every arm's trainer. ``--dry-run`` prints every job spec as one JSON list and needs no
credentials. ``--collect DIR`` (local or gs://) writes the report of the arms whose
``eval.json`` exists into DIR and lists the arms that have not finished.
"""

from __future__ import annotations

import argparse
import json
import sys
from posixpath import join  # local paths and gs:// URIs alike, without Beam

from runtime.errors import TagscaleError

PLAN_FILE = "compare_jobs.json"


def build_parser() -> argparse.ArgumentParser:
    from infra.cloud import vertex

    parser = argparse.ArgumentParser(
        prog="tagscale compare --backend vertex",
        allow_abbrev=False,  # a prefix of a trainer flag must reach the trainer, not match one of these
        description="Submit one Vertex AI custom job per (front-end, fraction) arm of the comparison, all at once. "
        "Other flags (--epochs, --preset, size overrides...) go to every arm's trainer.",
    )
    parser.add_argument("--backend", choices=("local", "vertex"), default="local")
    vertex.add_job_arguments(parser)
    parser.add_argument("--staging", required=True, help="gs:// directory; arm jobs write STAGING/runs/NAME/")
    parser.add_argument("--features", required=True, help="featurize output directory (gs://)")
    parser.add_argument("--fractions", default="0.1,0.3,1.0", help="training-set fractions (0.1,0.3,1.0)")
    parser.add_argument("--frontends", default="waveform,spectrogram", help="front-ends to compare (both)")
    parser.add_argument("--export", action="store_true", help="also export a serving model per arm")
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="jobs per arm, with seeds --seed, --seed+1, ... (the later ones in runs/NAME-sSEED/); "
        "--collect reports each arm's mean and min-max (1)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the job specs as one JSON list; no credentials")
    return parser


def arm_name(frontend: str, fraction: float) -> str:
    return f"{frontend}-f{fraction:g}"  # the run directory name of trainer.compare


def arm_jobs(args, trainer_flags: list[str]) -> list[tuple[dict, object, argparse.Namespace]]:
    """``(arm, CustomJob, job args)`` per (front-end, fraction), in the order of a local comparison."""
    from infra.cloud import vertex
    from model.features import FRONTENDS
    from trainer import compare, flags

    if not args.staging.startswith("gs://"):
        raise TagscaleError(f"--staging must be a gs:// path that the jobs can write, got {args.staging}")
    fractions = compare.parse_fractions(args.fractions)
    frontends = [f.strip() for f in args.frontends.split(",") if f.strip()]
    if not frontends or set(frontends) - set(FRONTENDS):
        raise TagscaleError(f"--frontends must name some of {', '.join(FRONTENDS)}, got {args.frontends!r}")
    check = flags.build_parser()  # the arms' trainers would reject bad flags: reject them here, before submitting

    def bad_flag(message: str):
        raise TagscaleError(f"the arms' training flags: {message}")

    check.error = bad_flag
    recipe = check.parse_args(["--features", "-", "--frontend", "waveform", "--job-dir", "-"] + trainer_flags)
    flags.check_recipe(check, recipe)
    if args.seeds < 1:
        raise TagscaleError(f"--seeds must be at least 1, got {args.seeds}")
    jobs = []
    runs = [(f, e, recipe.seed + k) for f in fractions for e in frontends for k in range(args.seeds)]
    for fraction, frontend, seed in runs:  # one job per arm and seed; seed number k its subset k
        name = arm_name(frontend, fraction) + (f"-s{seed}" if seed != recipe.seed else "")
        job_dir = join(args.staging.rstrip("/"), "runs", name)
        trainer_args = ["--features", args.features, "--frontend", frontend, "--fraction", f"{fraction:g}"]
        trainer_args += ["--subset", str(seed - recipe.seed), "--no-standardise"]  # as a local comparison
        trainer_args += [*trainer_flags, *([] if args.export else ["--no-export"])]
        trainer_args += ["--seed", str(seed)] if seed != recipe.seed else []  # argparse keeps the last
        job_args = argparse.Namespace(
            **{**vars(args), "job_dir": job_dir, "display_name": f"tagscale-compare-{name}".replace(".", "-")},
            trainer_args=trainer_args,
        )
        arm = {"name": name, "frontend": frontend, "fraction": fraction, "job_dir": job_dir}
        jobs.append((arm, vertex.build_job(job_args), job_args))
    return jobs


def submit_arms(argv: list[str]) -> int:
    """``--backend vertex``: every arm's job spec (``--dry-run``) or all of them submitted."""
    import tensorflow as tf

    from infra.cloud import vertex

    args, trainer_flags = build_parser().parse_known_args(argv)
    jobs = arm_jobs(args, trainer_flags)
    if args.dry_run:
        specs = [
            {**arm, "project": args.project, "region": args.region, "custom_job": vertex.job_spec_json(job)}
            for arm, job, _ in jobs
        ]
        print(json.dumps(specs, indent=2))
        return 0
    arms = [{**arm, "resource_name": vertex.submit(job, job_args)} for arm, job, job_args in jobs]
    with tf.io.gfile.GFile(join(args.staging.rstrip("/"), PLAN_FILE), "w") as handle:
        json.dump({"features": args.features, "arms": arms}, handle, indent=2)
    print(f"submitted {len(arms)} jobs; when they are done: tagscale compare --collect {args.staging}")
    return 0


def arm_dirs(root: str) -> dict[str, str]:
    """``{arm name: job dir}``: the submitted arms (``compare_jobs.json``), else every ``runs/`` folder."""
    import tensorflow as tf

    from trainer import callbacks

    plan = callbacks.read_json(join(root, PLAN_FILE), None)
    if plan:
        return {arm["name"]: arm["job_dir"] for arm in plan["arms"]}
    runs = join(root, "runs")
    if not tf.io.gfile.isdir(runs):
        raise TagscaleError(f"{root} has neither {PLAN_FILE} nor runs/: not a comparison directory")
    return {name.rstrip("/"): join(runs, name.rstrip("/")) for name in sorted(tf.io.gfile.listdir(runs))}


def collect(root: str) -> tuple[dict, list[str]]:
    """Write the report of the finished arms under ``root``; ``(report, names of unfinished arms)``."""
    import tensorflow as tf

    from trainer import callbacks, compare, compare_report, compare_seeds

    root = root.rstrip("/")
    rows, unfinished, settings, first = [], [], {}, None
    for name, job_dir in arm_dirs(root).items():
        evaluation = callbacks.read_json(join(job_dir, "eval.json"), None)
        if evaluation is None:
            unfinished.append(name)
            continue
        history = callbacks.read_history(join(job_dir, "history.json"))
        rows.append(compare.report_row(evaluation, history, job_dir, evaluation["settings"]["fraction"]))
        settings.setdefault(evaluation["frontend"], evaluation["settings"])
        first = first or evaluation  # every arm has the same features and test split
    if not rows:
        raise TagscaleError(f"no arm under {root} has finished (no eval.json yet): {', '.join(unfinished)}")
    rows.sort(key=lambda row: (row["fraction"], row["frontend"], row["seeds"][0] or 0))
    arms = {}  # the seeds of one arm make one row
    for row in rows:
        arms.setdefault((row["fraction"], row["frontend"]), []).append(row)
    rows = [compare_seeds.merge(seed_rows) for seed_rows in arms.values()]
    frontends = sorted(settings)
    report = {
        "features": first["features"],
        "tags": first["tags"],
        "n_tags": len(first["tags"]),
        "test": first["test"],
        "excluded_tags": first["excluded_tags"],
        "fractions": sorted({row["fraction"] for row in rows}),
        "frontends": frontends,
        "settings": {
            **{k: v for k, v in settings[frontends[0]].items() if k not in ("fraction", "subset", "overrides")},
            "overrides": {frontend: settings[frontend]["overrides"] for frontend in frontends},
        },
        "runs": rows,
        "paired": compare_report.paired(rows),
        "unfinished": unfinished,
    }
    with tf.io.gfile.GFile(join(root, "report.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    report["plots"] = compare_report.plot(report, root)
    with tf.io.gfile.GFile(join(root, "report.md"), "w") as handle:
        handle.write(compare_report.markdown(report) + unfinished_note(unfinished))
    return report, unfinished


def unfinished_note(unfinished: list[str]) -> str:
    if not unfinished:
        return ""
    return "\nNot finished yet (no eval.json): " + ", ".join(f"`{name}`" for name in unfinished) + ".\n"


def collect_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tagscale compare --collect", description="Report the finished arms of a comparison directory."
    )
    parser.add_argument("--collect", required=True, metavar="DIR_OR_GS", help="STAGING of --backend vertex, or OUT")
    args = parser.parse_args(argv)
    report, unfinished = collect(args.collect)
    for row in report["runs"]:
        print(f"{row['fraction']:>8g} {row['frontend']:<12} ROC-AUC {row['roc_auc']} PR-AUC {row['pr_auc']}")
    if unfinished:
        print("not finished: " + ", ".join(unfinished))
    print(f"wrote {args.collect.rstrip('/')}/report.md, report.json and the plots")
    return 0


HELP_NOTE = """
Also:
  tagscale compare --backend vertex --project P --region R --image IMAGE --staging gs://BUCKET/compare
      --features gs://... [--fractions ...] [--dry-run]   one Vertex AI job per arm, all at once
      (`tagscale compare --backend vertex --help` for its flags)
  tagscale compare --collect DIR_OR_GS   report.md, report.json and plots of the finished arms
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(arg == "--collect" or arg.startswith("--collect=") for arg in argv):
        return collect_command(argv)
    backend = argparse.ArgumentParser(add_help=False)
    backend.add_argument("--backend", choices=("local", "vertex"), default="local")
    known, rest = backend.parse_known_args(argv)
    if known.backend == "vertex":
        return submit_arms(argv)
    from trainer import compare

    if "-h" in rest or "--help" in rest:
        compare.build_parser().print_help()
        print(HELP_NOTE)
        return 0
    return compare.main(rest)


if __name__ == "__main__":
    from runtime.errors import run_command

    sys.exit(run_command("compare", main))
