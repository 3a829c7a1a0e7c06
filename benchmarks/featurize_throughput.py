"""Featurize against a librosa loop, side by side in one run, on the same MP3 files.

    .venv/bin/python benchmarks/featurize_throughput.py [--quick] [--tracks 40] [--repeat 4] [--seconds 30]

Rows: ``--tracks`` real-music-like MP3s (44.1 kHz stereo, 128 kb/s), then the same files listed
``--repeat`` times under new track_ids. Each method runs in its own process on both catalogs,
interleaved (librosa small, tagscale small, librosa large, tagscale large), so machine noise
hits both alike. tagscale runs as users run it (``tagscale featurize``, i.e. ``python -m infra.cli featurize``). CPU =
user+sys of the process and its children; peak RSS from ``wait4``.

* whole process: audio seconds / CPU seconds of the large run, tagscale over librosa;
* marginal: the large run minus the small one (fixed costs cancel), tagscale over librosa;
* CPU busy: CPU seconds / wall seconds of tagscale's large run, and of the large run minus the
  small one (marginal: the cores a longer catalog keeps busy).

Targets: marginal >= 1.5x, whole process >= 1.0x, marginal CPU busy >= 1.8 of 2 cores. The results go
into BENCHMARKS.md (section ``featurize_scale``), one row per machine (CPU model and AVX flags):
rows measured on other machines stay, labelled with their machine.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PYTHON, REPO, WORK, mp3_catalog  # noqa: E402

LIBROSA = """
import csv, sys, time
import librosa, numpy as np
rows = list(csv.DictReader(open(sys.argv[1])))
for row in rows:
    y, _ = librosa.load(row["uri"], sr=16000)
    mel = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, hop_length=256, n_mels=96)
    np.log10(10000 * mel + 1)
"""


SECTION = "featurize_scale"


def run_measured(command: list[str]) -> dict:
    """Run a child; its wall and CPU seconds (children included) and peak RSS (GB)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    stderr_tail = process.stderr.read()[-3000:]
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{' '.join(command[:4])}... failed:\n{stderr_tail.decode(errors='replace')}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_gb": usage.ru_maxrss / 1e6}


def repeated_catalog(catalog: pathlib.Path, repeat: int) -> pathlib.Path:
    """The same files listed ``repeat`` times under new track_ids."""
    lines = catalog.read_text().splitlines()
    rows = [f"{line.split(',', 1)[0]}-r{k},{line.split(',', 1)[1]}" for k in range(repeat) for line in lines[1:]]
    path = catalog.with_name(f"catalog_x{repeat}.csv")
    path.write_text("\n".join([lines[0], *rows]) + "\n")
    return path


def machine() -> str:
    """CPU model, core count and the AVX level (AVX-512 changes every figure)."""
    info = pathlib.Path("/proc/cpuinfo").read_text() if pathlib.Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", info)
    flags = set(re.search(r"flags\s*:\s*(.*)", info).group(1).split()) if "flags" in info else set()
    avx = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model.group(1).strip() if model else platform.processor()}, {os.cpu_count()} cores, {avx}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="10 tracks of 15 s (a smoke run; noisier ratios)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    if args.quick:
        args.tracks, args.seconds = 10, 15.0
    small = mp3_catalog(args.tracks, args.seconds)
    large = repeated_catalog(small, args.repeat)
    rows = {"small": args.tracks, "large": args.tracks * args.repeat}
    audio = {name: count * args.seconds for name, count in rows.items()}
    out = WORK / "featurize_scale_out"
    results = {}
    for size, catalog in (("small", small), ("large", large)):
        results[("librosa", size)] = run_measured([PYTHON, "-c", LIBROSA, str(catalog)])
        shutil.rmtree(out, ignore_errors=True)
        results[("tagscale", size)] = run_measured(
            [PYTHON, "-m", "infra.cli", "featurize", "--catalog", str(catalog), "--output", str(out)]
        )
        for method in ("librosa", "tagscale"):
            print(method, size, json.dumps({k: round(v, 2) for k, v in results[(method, size)].items()}), flush=True)

    def rate(method, size):
        return audio[size] / results[(method, size)]["cpu_s"]

    def marginal(method):
        return (audio["large"] - audio["small"]) / (
            results[(method, "large")]["cpu_s"] - results[(method, "small")]["cpu_s"]
        )

    big = results[("tagscale", "large")]
    summary = {
        "machine": machine(),
        "rows": f"{rows['small']} / {rows['large']} x {args.seconds:g} s",
        "librosa_marginal": marginal("librosa"),
        "tagscale_marginal": marginal("tagscale"),
        "marginal_ratio": marginal("tagscale") / marginal("librosa"),
        "whole_ratio": rate("tagscale", "large") / rate("librosa", "large"),
        "cpu_busy": big["cpu_s"] / big["wall_s"],
        "marginal_busy": (big["cpu_s"] - results[("tagscale", "small")]["cpu_s"])
        / (big["wall_s"] - results[("tagscale", "small")]["wall_s"]),
        "fixed_cpu_s": results[("tagscale", "small")]["cpu_s"] - audio["small"] / marginal("tagscale"),
        "rss_gb": f"{results[('tagscale', 'small')]['peak_rss_gb']:.2f} / {big['peak_rss_gb']:.2f}",
    }
    print(json.dumps(summary, indent=2))
    if not args.no_write:
        write_section(summary, results, audio)


def write_section(summary: dict, results: dict, audio: dict) -> None:
    """Replace this machine's row in BENCHMARKS.md's ``featurize_scale`` table; keep the others."""
    path = REPO / "BENCHMARKS.md"
    text = path.read_text()
    start, end = f"<!-- {SECTION} -->", f"<!-- /{SECTION} -->"
    header = (
        "| machine | rows | librosa marginal x RT/CPU s | tagscale marginal x RT/CPU s | marginal ratio (>= 1.5) "
        "| whole-process ratio (>= 1.0) | CPU busy, whole / marginal (marginal >= 1.8 of 2) | fixed CPU s "
        "| peak RSS GB small / large |"
    )
    old_rows = []
    if start in text:
        body = text[text.index(start) : text.index(end)]
        old_rows = [
            line
            for line in body.splitlines()
            if line.startswith("| ") and not line.startswith(("| machine", "|---")) and summary["machine"] not in line
        ]
    s = summary
    row = (
        f"| {s['machine']} | {s['rows']} | {s['librosa_marginal']:.0f} | {s['tagscale_marginal']:.0f} | "
        f"**{s['marginal_ratio']:.2f}x** | "
        f"**{s['whole_ratio']:.2f}x** | {s['cpu_busy']:.2f} / **{s['marginal_busy']:.2f}** | {s['fixed_cpu_s']:.1f} | "
        f"{s['rss_gb']} |"
    )
    detail = ", ".join(
        f"{method} {size}: {r['cpu_s']:.1f} CPU s / {r['wall_s']:.1f} wall s / {r['peak_rss_gb']:.2f} GB"
        for (method, size), r in results.items()
    )
    body = "\n".join(
        [
            start,
            "### Featurize at catalog scale: tagscale vs a librosa loop",
            "",
            "Written by `benchmarks/featurize_throughput.py` (`--quick` for a smoke run). Same MP3 files for both "
            "(real-music-like, 44.1 kHz stereo, 128 kb/s), the large catalog lists them again under new track_ids; "
            "librosa loop = `librosa.load(sr=16000)` + `melspectrogram(n_fft=512, hop=256, n_mels=96)` + "
            "`log10(10000 x + 1)`. Marginal = large run minus small run; whole process = the large run; "
            "CPU busy = CPU s / wall s of tagscale's large run (whole) and of the large run minus the small one "
            "(marginal; rows before this column was split show the whole figure alone). "
            "One row per machine: rows from earlier machines stay, "
            "labelled by their CPU.",
            "",
            header,
            "|---|---|---|---|---|---|---|---|---|",
            *old_rows,
            row,
            "",
            f"Last run ({s['machine']}): {detail}.",
            end,
        ]
    )
    if start in text:
        text = text[: text.index(start)] + body + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + body + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
