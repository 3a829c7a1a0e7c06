"""The fixed cost of a run: process CPU seconds of a 1-row ``featurize`` and a 1-row ``tag``, by phase.

    .venv/bin/python benchmarks/fixed_cost.py [--repeats 3] [--cache-dir DIR] [--quick]

Each command runs ``--repeats`` times on a catalog of one 30-s MP3 (common.mp3_catalog), in
two ways: as ``python -m infra.cli`` alone (the whole process's CPU, children included, from
wait4: the figure a user pays) and under benchmarks/phase_probe.py, which runs the same command
in its own process and splits its CPU into phases (imports of each heavy package, pipeline
construction, tf.Transform's trace and SavedModel, the serving model's load and first call, the
rest of the Beam run). Figures are medians over the repeats; CPU, not wall time, so a loaded
machine inflates them little. The table goes to BENCHMARKS.md (``fixed_cost``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys

from common import PYTHON, REPO, WORK, cpu_info, mp3_catalog, update_benchmarks_md
from tag_throughput import prepare_cache, run

PROBE = str(REPO / "benchmarks" / "phase_probe.py")


def commands(catalog, output, cache: str) -> dict:
    return {
        "featurize": ["featurize", "--catalog", str(catalog), "--output", str(output)],
        "tag": [
            "tag",
            "--catalog",
            str(catalog),
            "--output",
            str(output),
            "--model",
            "musicnn-mtt",
            "--cache-dir",
            cache,
        ],
    }


def measure(name: str, argv: list[str], output, repeats: int, env: dict) -> dict:
    whole, phases = [], []
    for i in range(repeats):
        shutil.rmtree(output, ignore_errors=True)
        whole.append(run([PYTHON, "-m", "infra.cli", *argv], env)["cpu_s"])
        shutil.rmtree(output, ignore_errors=True)
        out = WORK / f"phases_{name}_{i}.json"
        probed = run([PYTHON, PROBE, str(out), *argv], env)
        result = json.loads(out.read_text())
        if result["code"]:
            raise RuntimeError(f"{name} under the probe exited {result['code']}")
        phases.append({**result["phases"], "_probe_whole": probed["cpu_s"]})
    names = {key for p in phases for key in p}
    return {
        "whole_cpu_s": statistics.median(whole),
        "whole_all": whole,
        "phases": {key: statistics.median(p.get(key, 0.0) for p in phases) for key in names},
    }


def report(results: dict, load: tuple, repeats: int) -> list[str]:
    lines = [
        "### Fixed cost of a run (`benchmarks/fixed_cost.py`)",
        "",
        f"CPU: {cpu_info()}; load average at the start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}.",
        "",
        f"One track (a 30-s MP3), process CPU s, median of {repeats} runs. The phases come from "
        "benchmarks/phase_probe.py (its own run of the same command; each phase its own CPU only).",
        "",
        "| phase | " + " | ".join(results) + " |",
        "|---|" + "---:|" * len(results),
    ]
    names = sorted(
        {k for r in results.values() for k in r["phases"] if not k.startswith("_")},
        key=lambda k: -max(r["phases"].get(k, 0.0) for r in results.values()),
    )
    for key in names:
        lines.append(f"| {key} | " + " | ".join(f"{r['phases'].get(key, 0.0):.2f}" for r in results.values()) + " |")
    lines.append(
        "| **whole process under the probe** | "
        + " | ".join(f"{r['phases']['_probe_whole']:.2f}" for r in results.values())
        + " |"
    )
    lines.append(
        "| **whole process, plain `python -m infra.cli`** | "
        + " | ".join(
            f"**{r['whole_cpu_s']:.2f}** ({', '.join(f'{x:.1f}' for x in r['whole_all'])})" for r in results.values()
        )
        + " |"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", help="a tagscale cache holding musicnn-mtt (default: benchmarks/work/cache)")
    parser.add_argument("--quick", action="store_true", help="one run of each")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    catalog = mp3_catalog(1, 30.0)
    cache = args.cache_dir or prepare_cache()
    env = {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    load = os.getloadavg()
    results = {}
    for name, argv in commands(catalog, WORK / "fixed_cost_out", cache).items():
        results[name] = measure(name, argv, WORK / "fixed_cost_out", args.repeats, env)
        print(name, {k: round(v, 2) for k, v in results[name]["phases"].items()}, flush=True)
    lines = report(results, load, args.repeats)
    print("\n".join(lines))
    update_benchmarks_md("fixed_cost", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
