"""Batch tagging throughput: `tagscale tag --model musicnn-mtt` against musicnn's own way, one run.

    .venv/bin/python benchmarks/tag_throughput.py            # 40 MP3s x 30 s, rows 40 and 160
    .venv/bin/python benchmarks/tag_throughput.py --quick    # 10 MP3s, rows 10 and 40 (~2 min)

Files: ``--tracks`` MP3s of 30 s (44.1 kHz stereo, 128 kb/s, made once by common.mp3_catalog);
the small catalog lists each once, the large one ``--repeat`` times under new track_ids.

- musicnn's way: librosa features + the wheel's TF 1 graph fed one patch at a time (batch 1),
  file after file (benchmarks/musicnn_reference.py, float32). Its marginal rate is its in-process
  work (CPU of the loop, no start-up), which is what a longer catalog adds.
- tagscale: ``tagscale tag --model musicnn-mtt`` on both catalogs, whole process, on all cores
  and pinned to one (``taskset -c 0``). Marginal = large run minus small run (CPU and wall).
- ``--precision bfloat16`` on both catalogs, where oneDNN can run it (AVX512_BF16 or AMX; it is opt-in
  in ``tag``; its ratio and its largest score difference are reported beside float32's).
- The ceiling: the model alone (``roofline.py``'s whole SavedModel, one thread, batch 16) in the
  same run; musicnn's way per CPU s over the model's is the ratio ``tag`` would reach if decoding,
  the log-mel's framing, Beam and the Parquet output cost nothing.

Targets (per CPU s, marginal, over musicnn's way): 3.5x on an AVX-512 CPU, 5x on an AVX2-only one.
Set ``ONEDNN_MAX_CPU_ISA=AVX2`` to measure both sides on oneDNN's AVX2 kernels (the section says so).

CPU = user+sys of the process and its children; peak RSS from wait4. Everything is sequential,
so the figures are ratios measured side by side. Results go to BENCHMARKS.md (``tag_throughput``)
with the CPU model and its vector flags.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time

from common import PYTHON, REPO, WORK, cpu_flags, cpu_info, mp3_catalog, update_benchmarks_md

MUSICNN_WAY = """
import csv, json, sys, time
import numpy as np
from model import pretrained
from benchmarks.musicnn_reference import MusicnnGraph, musicnn_log_mel_patches
package = pretrained.unpack_wheel(pretrained.download_wheel(sys.argv[3]), sys.argv[3])
graph = MusicnnGraph(pretrained.checkpoint_prefix(package, pretrained.MODELS["musicnn-mtt"]))
rows = list(csv.DictReader(open(sys.argv[1])))
graph(musicnn_log_mel_patches(rows[0]["uri"])[:1])  # first call builds the session's kernels
cpu, wall = time.process_time(), time.perf_counter()
scores = {}
for row in rows:
    patches = musicnn_log_mel_patches(row["uri"])
    scores[row["track_id"]] = np.mean([graph(patch[None])[0] for patch in patches], axis=0).tolist()
print(f"work_cpu={time.process_time() - cpu:.3f} work_wall={time.perf_counter() - wall:.3f}")
json.dump(scores, open(sys.argv[2], "w"))
"""


def run(command: list[str], env: dict) -> dict:
    """Run a child; wall s, CPU s (user+sys, its reaped children included) and peak RSS MB, from wait4."""
    start = time.perf_counter()
    with open(os.devnull, "w") as devnull, open(WORK / "child_stdout.txt", "w+") as out:
        child = subprocess.Popen(command, stdout=out, stderr=devnull, cwd=REPO, env={**os.environ, **env})
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read()
    wall = time.perf_counter() - start
    if child.returncode:
        raise RuntimeError(f"{' '.join(command[:6])}... exited {child.returncode}; rerun it by hand to see why")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
        "stdout": stdout,
    }


def repeated_catalog(catalog, repeat: int):
    """The catalog listed ``repeat`` times, copies under new track_ids (same files)."""
    rows = list(csv.DictReader(open(catalog)))
    path = catalog.parent / f"catalog_x{repeat}.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for copy in range(repeat):
            for row in rows:
                writer.writerow({**row, "track_id": row["track_id"] if copy == 0 else f"{row['track_id']}_copy{copy}"})
    return path, len(rows) * repeat


def prepare_cache() -> str:
    """A cache of its own with musicnn-mtt converted by this checkout's code (the wheel is copied
    from the user's cache when there, else downloaded)."""
    cache = WORK / "cache"
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    user_wheels = os.path.join(os.path.expanduser("~"), ".cache", "tagscale", "wheels")
    if os.path.isdir(user_wheels):
        for name in os.listdir(user_wheels):
            if not (wheels / name).exists():
                shutil.copy(os.path.join(user_wheels, name), wheels / name)
    subprocess.run(
        [PYTHON, "-m", "infra.cli", "pretrained", "fetch", "musicnn-mtt", "--cache-dir", str(cache)],
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
    )
    return str(cache)


def tag_command(catalog, output, cache: str, pinned: bool, precision: str = "float32") -> list[str]:
    command = [
        PYTHON,
        "-m",
        "infra.cli",
        "tag",
        "--catalog",
        str(catalog),
        "--model",
        "musicnn-mtt",
        "--output",
        str(output),
        "--cache-dir",
        cache,
        "--progress-every",
        "1000",
        "--precision",
        precision,
    ]
    return (["taskset", "-c", "0"] + command) if pinned else command


def tagscale_scores(output) -> dict:
    import pyarrow.parquet as pq

    from runfolder import manifest

    rows = pq.read_table(manifest.tag_files(str(output))).to_pylist()  # the files the run's manifest lists
    return {row["track_id"]: {s["tag"]: s["score"] for s in row["scores"]} for row in rows}


# The runs of `tag`: all cores, all cores in bfloat16, one core (``taskset -c 0``), and their precision.
LANES = {"all": "float32", "bfloat16": "bfloat16", "pinned": "float32"}


def lanes(pinned: bool, bfloat16: bool) -> list[str]:
    wanted = {"all": True, "bfloat16": bfloat16, "pinned": pinned}
    return [lane for lane in LANES if wanted[lane]]


def model_alone(cache: str, bfloat16: bool) -> dict:
    """CPU s per 3-s patch of the whole SavedModel alone (roofline.py: one thread, batch 16), by precision."""
    seconds = {}
    for precision in ("float32", "bfloat16") if bfloat16 else ("float32",):
        path = WORK / f"model_alone_{precision}.json"
        command = [PYTHON, str(REPO / "benchmarks" / "roofline.py"), "--quick", "--cache-dir", cache]
        subprocess.run(command + ["--precision", precision, "--json", str(path)], check=True, cwd=REPO)
        measured = json.loads(path.read_text())
        seconds[precision] = measured["groups"]["whole model (SavedModel)"]["cpu_s"] / measured["batch"]
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=40, help="distinct MP3 files (%(default)s)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--repeat", type=int, default=4, help="the large catalog lists every file this often (%(default)s)"
    )
    parser.add_argument("--quick", action="store_true", help="10 files, rows 10 and 40: a smoke run, noisier")
    parser.add_argument("--no-pinned", action="store_true", help="skip the taskset -c 0 runs")
    parser.add_argument("--no-bfloat16", action="store_true", help="skip the bfloat16 runs")
    args = parser.parse_args()
    if args.quick:
        args.tracks = 10
    small = mp3_catalog(args.tracks, args.seconds)
    large, n_large = repeated_catalog(small, args.repeat)
    n_small, seconds = args.tracks, args.seconds
    cache = prepare_cache()
    env = {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    pinned = not args.no_pinned and shutil.which("taskset") and len(os.sched_getaffinity(0)) > 1
    from runtime.machine import bfloat16_unavailable  # a CPU without bfloat16 kernels, or a capped oneDNN

    bfloat16 = not args.no_bfloat16 and bfloat16_unavailable() is None
    runs = {}
    reference_file = WORK / "musicnn_way_scores.json"
    runs["musicnn"] = run([PYTHON, "-c", MUSICNN_WAY, str(small), str(reference_file), cache], env)
    print("musicnn's way", {k: round(v, 2) for k, v in runs["musicnn"].items() if k != "stdout"}, flush=True)
    for cores in lanes(pinned, bfloat16):
        for rows, catalog in ((n_small, small), (n_large, large)):
            output = WORK / f"tag_{cores}_{rows}"
            shutil.rmtree(output, ignore_errors=True)
            command = tag_command(catalog, output, cache, cores == "pinned", LANES[cores])
            runs[(cores, rows)] = run(command, env)
            print(
                f"tagscale tag, {cores} cores, {rows} rows",
                {k: round(v, 2) for k, v in runs[(cores, rows)].items() if k != "stdout"},
                flush=True,
            )
    runs["model"] = model_alone(cache, bfloat16)
    lines = report(runs, args, n_small, n_large, seconds, reference_file, pinned, bfloat16)
    print("\n".join(lines))
    update_benchmarks_md("tag_throughput", "\n".join(lines))
    return 0


def internal(stdout: str, key: str) -> float:
    return float(stdout.split(f"{key}=")[1].split()[0])


def score_difference(reference: dict, output, order: list[str]) -> float:
    """Largest |score| difference between a tag run and musicnn's way on the same tracks."""
    ours = tagscale_scores(output)
    return max(abs(ours[t][tag] - reference[t][order.index(tag)]) for t in reference for tag in ours[t])


def report(runs, args, n_small, n_large, seconds, reference_file, pinned, bfloat16) -> list[str]:
    from model import dsp, pretrained  # the tag order of the reference's score vectors

    audio_small, audio_large = n_small * seconds, n_large * seconds
    base = runs["musicnn"]
    base_cpu_rate = audio_small / internal(base["stdout"], "work_cpu")
    base_wall_rate = audio_small / internal(base["stdout"], "work_wall")
    reference = json.loads(reference_file.read_text())
    tags_file = os.path.join(pretrained.model_dir("musicnn-mtt", str(WORK / "cache")), "tags.txt")
    order = [line.strip() for line in open(tags_file) if line.strip()]
    target = 3.5 if "avx512f" in cpu_flags() and not os.environ.get("ONEDNN_MAX_CPU_ISA") else 5.0

    def marginal(cores):
        small, large = runs[(cores, n_small)], runs[(cores, n_large)]
        extra = audio_large - audio_small
        return extra / (large["cpu_s"] - small["cpu_s"]), extra / (large["wall_s"] - small["wall_s"])

    lines = [
        "### Batch tagging throughput",
        "",
        f"Machine: {cpu_info()}. Made by `python benchmarks/tag_throughput.py{' --quick' if args.quick else ''}` "
        f"on {time.strftime('%Y-%m-%d', time.gmtime())} "
        "(run it on an otherwise idle machine: the pinned and all-core runs are compared by wall time).",
        f"{n_small} MP3 files x {seconds:g} s (44.1 kHz stereo, 128 kb/s); "
        f"the large catalog lists them {args.repeat} times "
        f"under new track_ids ({n_large} rows). "
        "CPU = user+sys of the process and its children; marginal = large run minus small run.",
        "",
        "| method | rows | CPU s | wall s | x realtime per CPU s | x realtime per wall s | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| musicnn's way (librosa + its TF 1 graph, batch 1), whole process | {n_small} | {base['cpu_s']:.1f} | "
        f"{base['wall_s']:.1f} | "
        f"{audio_small / base['cpu_s']:.1f} | {audio_small / base['wall_s']:.1f} | {base['rss_mb']:.0f} |",
        f"| musicnn's way, work only (= its marginal rate) | {n_small} | {audio_small / base_cpu_rate:.1f} | "
        f"{audio_small / base_wall_rate:.1f} | "
        f"{base_cpu_rate:.1f} | {base_wall_rate:.1f} | - |",
    ]
    labels = {"all": "`tagscale tag`", "bfloat16": "`tagscale tag --precision bfloat16`"}
    for cores in lanes(pinned, bfloat16):
        label = labels.get(cores, "`tagscale tag`, `taskset -c 0`")
        for rows, audio in ((n_small, audio_small), (n_large, audio_large)):
            r = runs[(cores, rows)]
            lines.append(
                f"| {label}, whole process | {rows} | {r['cpu_s']:.1f} | {r['wall_s']:.1f} | "
                f"{audio / r['cpu_s']:.1f} | {audio / r['wall_s']:.1f} | {r['rss_mb']:.0f} |"
            )
        cpu_rate, wall_rate = marginal(cores)
        lines.append(
            f"| {label}, marginal ({n_large} - {n_small} rows) | {n_large - n_small} | - | - | "
            f"**{cpu_rate:.1f}** | **{wall_rate:.1f}** | - |"
        )
    cpu_rate, wall_rate = marginal("all")
    model = runs["model"]
    ceiling = dsp.PATCH_SECONDS / model["float32"]  # x realtime per CPU s, the model alone
    lines += [
        "",
        f"- tagscale / musicnn's way, per CPU s (marginal): **{cpu_rate / base_cpu_rate:.2f}x** "
        f"(target {target:g}x on this kind of CPU); per wall s: {wall_rate / base_wall_rate:.2f}x.",
        f"- The ceiling, measured in the same run: the model alone takes {1000 * model['float32']:.1f} CPU ms per "
        f"3-s patch (one thread, batch 16), {ceiling:.1f}x realtime per CPU s, so `tag` could reach at most "
        f"**{ceiling / base_cpu_rate:.2f}x** musicnn's way if everything but the model cost nothing; "
        f"`tag` spends {cpu_rate / ceiling:.0%} of its marginal CPU in the model "
        "(benchmarks/roofline.py: the model's GEMMs run near one core's sgemm peak).",
    ]
    if bfloat16:
        b_rate, _ = marginal("bfloat16")
        b_ceiling = dsp.PATCH_SECONDS / model["bfloat16"]
        b_diff = score_difference(reference, WORK / f"tag_bfloat16_{n_small}", order)
        lines.append(
            f"- `--precision bfloat16` (opt-in; this CPU has "
            f"{'AMX' if 'amx_bf16' in cpu_flags() else 'AVX512_BF16'}): **{b_rate / base_cpu_rate:.2f}x** "
            f"musicnn's way per CPU s (marginal), {b_rate / cpu_rate:.2f}x float32; the model alone "
            f"{1000 * model['bfloat16']:.1f} CPU ms per patch (ceiling {b_ceiling / base_cpu_rate:.2f}x); "
            f"largest score difference from musicnn's way {b_diff:.1e}."
        )
    lines.append(
        f"- cores busy, marginal CPU s / wall s on all cores: **{wall_rate / cpu_rate:.2f}** of {os.cpu_count()} "
        "(target 1.8 of 2)."
    )
    if pinned:
        _, pinned_wall = marginal("pinned")
        lines.append(
            f"- all cores / `taskset -c 0`, wall rate (marginal): **{wall_rate / pinned_wall:.2f}x** "
            "(target 1.8x on 2 cores)."
        )
    diff = score_difference(reference, WORK / f"tag_all_{n_small}", order)
    lines.append(
        f"- Largest score difference, tagscale vs musicnn's way on the same files: {diff:.1e} "
        "(whole paths: tagscale decodes with "
        "libsndfile + soxr and computes the log-mel in TF, musicnn uses librosa; "
        "on the same log-mel the models agree to ~3e-7, tests/test_pretrained.py)."
    )
    return lines


if __name__ == "__main__":
    sys.exit(main())
