"""demo: the whole chain on a synthesized catalog, locally (what ``make demo`` runs).

    demo-catalog -> featurize -> compare (both front-ends, few epochs)
      -> tag with the trained spectrogram model and with musicnn-mtt -> a few queries

Every step is the same ``main(argv)`` the ``tagscale`` subcommands run, on DirectRunner and
local disk; each step's output directory is printed as it finishes.
"""

from __future__ import annotations

import argparse
import os
import time

# Small networks and few epochs so the comparison runs in minutes on 2 CPU cores; the
# front-end structure is the paper's, only the widths shrink (see docs/training.md, "On the demo catalog").
COMPARE_FLAGS = [
    "--fractions",
    "0.25,0.5,1.0",
    "--epochs",
    "8",
    "--batch-size",
    "16",
    "--learning-rate",
    "3e-3",
    "--frontend-filters",
    "4",
    "--backend-channels",
    "32",
    "--dense-units",
    "64",
    "--dropout",
    "0.1",
    "--batch-norm-momentum",
    "0.9",  # Keras' 0.99 lags the weights in runs this short
]
DEMO_SECONDS = "3.5"  # one patch per track: many tracks for little compute
# Seconds each step took on the reference machine (BENCHMARKS.md, the AVX2 EPYC: 2 cores, idle;
# "tag" the mean of the two tagging runs); the estimate of the time left scales the steps still
# to run by how fast this machine has been so far.
STEP_SECONDS = {"synth": 26, "featurize": 22, "compare": 254, "fetch": 1, "tag": 20, "queries": 3}


class Clock:
    """Elapsed time and an estimate of the time left, from the reference times of the steps."""

    def __init__(self, steps: list[str]):
        self.start = time.monotonic()
        self.left = list(steps)
        self.done_reference = 0.0

    def finished(self, name: str) -> str:
        self.left.remove(name)
        self.done_reference += STEP_SECONDS[name]
        elapsed = time.monotonic() - self.start
        speed = elapsed / self.done_reference if self.done_reference else 1.0
        left = speed * sum(STEP_SECONDS[step] for step in self.left)
        return f"demo: {elapsed:.0f} s so far, about {left:.0f} s left"


def step(title: str, function, argv: list[str], where: str, clock: Clock | None = None, name: str = "") -> None:
    print(f"\n=== {title}\n$ tagscale {' '.join(argv)}", flush=True)
    start = time.monotonic()
    function(argv[1:])
    estimate = f"; {clock.finished(name)}" if clock else ""
    print(f"--- {title}: {time.monotonic() - start:.0f} s -> {where}{estimate}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tagscale demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="demo_output", help="where every output goes (demo_output)")
    parser.add_argument("--tracks", type=int, default=800, help="demo catalog size (800 tracks of 3.5 s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--skip-pretrained", action="store_true", help="do not fetch or use musicnn-mtt (no registry access)"
    )
    args = parser.parse_args(argv)

    from infra.demo import catalog as demo_catalog
    from model import pretrained
    from pipelines import featurize, tag
    from runfolder import layout
    from runtime.machine import set_tf_threads
    from tagruns import query
    from trainer import compare, lanes

    # One TensorFlow thread per comparison lane, set before featurize starts TensorFlow's runtime in
    # this process: then this process trains one of the comparison's six runs itself (see
    # trainer.lanes.run_all), and tagging's two concurrent model calls get a thread each.
    set_tf_threads(lanes.threads_per_job(lanes.default_jobs(6)), inter=2)

    work = os.path.abspath(args.workdir)
    catalog = os.path.join(work, "catalog")
    features = os.path.join(work, "features")
    comparison = os.path.join(work, "compare")
    start = time.monotonic()
    clock = Clock(
        ["synth", "featurize", "compare", "tag", "queries"] + ([] if args.skip_pretrained else ["fetch", "tag"])
    )
    print(
        f"demo: about {sum(STEP_SECONDS[name] for name in clock.left)} s on the reference machine (README)", flush=True
    )

    step(
        "1/5 synthesize a demo catalog",
        demo_catalog.main,
        ["demo-catalog", catalog, "--tracks", str(args.tracks), "--duration", DEMO_SECONDS, "--seed", str(args.seed)],
        os.path.join(catalog, "catalog.csv"),
        clock,
        "synth",
    )
    step(
        "2/5 featurize (Beam DirectRunner + tf.Transform)",
        featurize.main,
        ["featurize", "--catalog", os.path.join(catalog, "catalog.csv"), "--output", features],
        features,
        clock,
        "featurize",
    )
    step(
        "3/5 front-end comparison (waveform vs spectrogram)",
        compare.main,
        [
            "compare",
            "--features",
            features,
            "--output",
            comparison,
            "--seed",
            str(args.seed),
            "--export-runs",
            "spectrogram-f1",
            *COMPARE_FLAGS,
        ],
        os.path.join(comparison, "report.md"),
        clock,
        "compare",
    )
    trained = os.path.join(comparison, "runs", "spectrogram-f1", "export")  # compare's job dir naming
    tag_runs = [("spectrogram (trained here)", trained, os.path.join(work, "tags-spectrogram"))]
    if not args.skip_pretrained:
        print("\n=== fetch the pretrained musicnn models (pip download musicnn==0.1.0)", flush=True)
        pretrained.fetch()
        print(f"--- {clock.finished('fetch')}", flush=True)
        tag_runs.append(("musicnn-mtt (pretrained)", "musicnn-mtt", os.path.join(work, "tags-musicnn-mtt")))
    for index, (label, model, output) in enumerate(tag_runs):
        step(
            f"4/5 tag the catalog with {label}",
            tag.main,
            ["tag", "--catalog", os.path.join(catalog, "catalog.csv"), "--model", model, "--output", output],
            os.path.join(output, layout.TAGS),
            clock,
            "tag",
        )

    print("\n=== 5/5 queries (DuckDB over the Parquet output)", flush=True)
    first_track = "demo-00000"
    for output in (run[2] for run in tag_runs):
        for command in (["stats"], ["top", "drums", "--limit", "5"], ["track", first_track, "--limit", "5"]):
            if command[0] == "top" and "musicnn" in output:
                command = ["top", "piano", "--limit", "5"]
            print(f"\n$ tagscale query --tags {output} {' '.join(command)}", flush=True)
            query.main(["--tags", output, *command])
    clock.finished("queries")
    print(f"\ndemo finished in {time.monotonic() - start:.0f} s; everything is under {work}/", flush=True)
    print(
        f"  catalog: {catalog}/catalog.csv\n  features: {features}/\n  comparison: {comparison}/report.md (+ PNG plots)"
    )
    for label, _, output in tag_runs:
        print(f"  tags, {label}: {output}/tags/*.parquet")
    print(
        "\nbrowse it in a web browser:\n  tagscale explore "
        + " ".join(f"--tags {output}" for _, _, output in tag_runs),
        flush=True,
    )
    return 0
