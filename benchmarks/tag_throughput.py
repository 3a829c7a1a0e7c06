"""Batch tagging throughput: `tagscale tag --model musicnn-mtt` against musicnn's own way.

    .venv/bin/python benchmarks/tag_throughput.py [--tracks 40] [--seconds 30] [--memory]

musicnn's way: librosa features, its TF 1 meta graph fed one patch at a time (batch size 1),
one file after another (model/musicnn_reference.py, float32). Both run in their own process on
the same MP3 files; CPU is user+sys of the process and its children. ``--memory`` also measures
peak RSS of `tagscale tag` on 200 and 2,000 short tracks. Results go to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys

import numpy as np

from common import PYTHON, REPO, WORK, internal_seconds, measure, mp3_catalog, update_benchmarks_md

MUSICNN_WAY = """
import csv, json, sys, time
import numpy as np
from model import pretrained
from model.musicnn_reference import MusicnnGraph, musicnn_log_mel_patches
package = pretrained.unpack_wheel(pretrained.download_wheel())
graph = MusicnnGraph(pretrained.checkpoint_prefix(package, pretrained.MODELS["musicnn-mtt"]))
rows = list(csv.DictReader(open(sys.argv[1])))
start = time.perf_counter()
scores = {}
for row in rows:
    patches = musicnn_log_mel_patches(row["uri"])
    scores[row["track_id"]] = np.mean([graph(patch[None])[0] for patch in patches], axis=0).tolist()
print(f"work={time.perf_counter() - start:.3f}")
json.dump(scores, open(sys.argv[2], "w"))
"""

TAG = """
import sys, time
from pipelines import tag
start = time.perf_counter()
summary = tag.run(sys.argv[1:])
print(f"work={time.perf_counter() - start:.3f} tagged={summary['tagged']}")
"""


def tagscale_scores(output) -> dict:
    import pyarrow.parquet as pq


    table = pq.read_table(output / "tags").to_pylist()
    return {row["track_id"]: {s["tag"]: s["score"] for s in row["scores"]} for row in table}


def short_catalog(n_tracks: int, seconds: float = 4.0):
    """n short WAV tracks (noise-like tones) for the memory measurement."""
    import soundfile

    root = WORK / f"short_{n_tracks}"
    catalog = root / "catalog.csv"
    if catalog.exists():
        return catalog
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * 22050)) / 22050
    lines = ["track_id,uri,tags"]
    for i in range(n_tracks):
        y = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t) + 0.05 * rng.normal(size=t.size)
        path = root / f"s{i:05d}.wav"
        soundfile.write(path, y.astype(np.float32), 22050, subtype="PCM_16")
        lines.append(f"s{i:05d},{path},")
    catalog.write_text("\n".join(lines) + "\n")
    return catalog


def peak_rss_mb(command: list[str]) -> float:
    import subprocess

    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: run each in a fresh wrapper.
    wrapper = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    result = subprocess.run([PYTHON, "-c", wrapper, *command], capture_output=True, text=True, check=True, cwd=REPO)
    return int(result.stdout.strip()) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tracks", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args()
    from model import pretrained

    pretrained.fetch()
    catalog = mp3_catalog(args.tracks, args.seconds)
    audio_seconds = args.tracks * args.seconds
    env = {"PYTHONPATH": str(REPO)}
    results, scores = {}, {}
    for precision in ("float32", "bfloat16"):
        out = WORK / f"tag_{precision}"
        shutil.rmtree(out, ignore_errors=True)
        run = measure([PYTHON, "-c", TAG, "--catalog", str(catalog), "--model", "musicnn-mtt", "--output", str(out), "--precision", precision], env=env)
        results[f"tagscale tag, {precision}"] = run
        scores[precision] = tagscale_scores(out)
    reference_file = WORK / "musicnn_way_scores.json"
    results["musicnn's way (librosa + meta graph, batch 1)"] = measure([PYTHON, "-c", MUSICNN_WAY, str(catalog), str(reference_file)], env=env)
    tags = [line.strip() for line in open(pretrained.model_dir("musicnn-mtt") + "/tags.txt") if line.strip()]
    reference = {track: dict(zip(tags, values)) for track, values in json.loads(reference_file.read_text()).items()}

    def largest_difference(ours):
        return max(abs(ours[track][tag] - reference[track][tag]) for track in reference for tag in tags)

    base = results["musicnn's way (librosa + meta graph, batch 1)"]
    lines = [
        "## Batch tagging throughput (issue 5)",
        "",
        f"{args.tracks} MP3 tracks x {args.seconds:g} s (44.1 kHz stereo, 128 kb/s) = {audio_seconds:g} s of audio, model musicnn-mtt; "
        "each in its own process; CPU = user+sys of the process and its children; 'work only' excludes start-up and imports.",
        "",
        "| method | CPU s | wall s | x realtime per CPU s | x realtime per wall s | x realtime, work only (wall) | speed-up per CPU s vs musicnn's way | largest score difference vs musicnn's way |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for name, run in results.items():
        work = internal_seconds(run["stdout"], "work")
        precision = "bfloat16" if "bfloat16" in name else "float32" if "float32" in name else None
        diff = f"{largest_difference(scores[precision]):.2e}" if precision else "-"
        speedup = base["cpu_s"] / run["cpu_s"]
        summary[name] = {"cpu_s": run["cpu_s"], "wall_s": run["wall_s"], "work_s": work, "speedup": speedup, "diff": diff}
        lines.append(
            f"| {name} | {run['cpu_s']:.1f} | {run['wall_s']:.1f} | {audio_seconds / run['cpu_s']:.0f} | {audio_seconds / run['wall_s']:.0f} | "
            f"{audio_seconds / work:.0f} | {speedup:.2f}x | {diff} |"
        )
        print(name, json.dumps(summary[name]), flush=True)
    if args.memory:
        lines += ["", "Peak RSS of `tagscale tag --model musicnn-mtt` (whole process, 4 s WAV tracks):", "", "| tracks | peak RSS MB |", "|---|---|"]
        for n in (200, 2000):
            out = WORK / f"tag_memory_{n}"
            shutil.rmtree(out, ignore_errors=True)
            rss = peak_rss_mb([PYTHON, "-m", "pipelines.tag", "--catalog", str(short_catalog(n)), "--model", "musicnn-mtt", "--output", str(out)])
            lines.append(f"| {n} | {rss:.0f} |")
            print(f"{n} tracks: peak RSS {rss:.0f} MB", flush=True)
    update_benchmarks_md("tag_throughput", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
