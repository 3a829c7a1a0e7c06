"""Run every benchmark in one go (what `make bench` does) and refresh BENCHMARKS.md.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only NAME ...]

Each script measures the anchor and tagscale side by side on the same files in one run and
writes its own section of BENCHMARKS.md; they run one after another so none disturbs another's
timings. ``--quick`` is passed to every script (fewer files, for a smoke run).
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
# The order: the cheap, data-producing ones first.
SCRIPTS = (
    "featurize_throughput",
    "train_throughput",
    "tag_throughput",
    "roofline",
    "fixed_cost",
    "incremental_scale",
    "crop_throughput",
    "similar_search",
    "explore_queries",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    parser.add_argument("--only", nargs="*", choices=SCRIPTS, help="run only these benchmarks")
    args = parser.parse_args(argv)
    failed = []
    for name in args.only or SCRIPTS:
        script = HERE / f"{name}.py"
        if not script.exists():
            print(f"== {name}: no such script, skipped", flush=True)
            continue
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        code = subprocess.run(
            [sys.executable, str(script), *(["--quick"] if args.quick else [])], cwd=HERE.parent
        ).returncode
        print(f"== {name}: exit {code} in {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
