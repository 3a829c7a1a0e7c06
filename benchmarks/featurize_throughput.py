"""Featurize throughput against a librosa extractor, ffmpeg decoding alone and the in-process floor.

    .venv/bin/python benchmarks/featurize_throughput.py [--tracks 40] [--seconds 30]

Each method runs in its own process, sequentially, on the same MP3 files; CPU is user+sys of
that process and its children (ffmpeg included). Results go to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys

from common import PYTHON, WORK, internal_seconds, measure, mp3_catalog, update_benchmarks_md

LIBROSA = """
import csv, sys, time
import librosa, numpy as np
rows = list(csv.DictReader(open(sys.argv[1])))
start = time.perf_counter()
for row in rows:
    y, _ = librosa.load(row["uri"], sr=16000)
    mel = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, hop_length=256, n_mels=96)
    np.log10(10000 * mel + 1)
print(f"work={time.perf_counter() - start:.3f}")
"""

FFMPEG_ONLY = """
import csv, sys, time
from pipelines import audio
rows = list(csv.DictReader(open(sys.argv[1])))
start = time.perf_counter()
for row in rows:
    audio.decode_with_ffmpeg(row["uri"], max_duration_s=600, timeout_s=60)
print(f"work={time.perf_counter() - start:.3f}")
"""

FLOOR = """
import csv, sys, time
import numpy as np, soundfile, soxr
import tensorflow as tf
from model import dsp
rows = list(csv.DictReader(open(sys.argv[1])))
dsp.log_mel_patches(np.zeros((1, dsp.PATCH_SAMPLES), np.float32))  # build the TF kernels once
decode = resample = mel = 0.0
for row in rows:
    t0 = time.perf_counter()
    y, rate = soundfile.read(row["uri"], dtype="float32", always_2d=True)
    t1 = time.perf_counter()
    y = soxr.resample(y.mean(axis=1), rate, 16000, quality="HQ")
    t2 = time.perf_counter()
    dsp.log_mel_patches(dsp.patch_waveform(y)).numpy()
    t3 = time.perf_counter()
    decode, resample, mel = decode + t1 - t0, resample + t2 - t1, mel + t3 - t2
print(f"work={decode + resample + mel:.3f} decode={decode:.3f} resample={resample:.3f} mel={mel:.3f}")
"""

FEATURIZE = """
import sys, time
from pipelines import featurize
start = time.perf_counter()
metadata = featurize.run(sys.argv[1:])
print(f"work={time.perf_counter() - start:.3f} ok={metadata['tracks_ok']}")
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tracks", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--marginal", type=int, default=160, help="also featurize this many tracks to separate fixed from per-track cost (0: skip)")
    args = parser.parse_args()
    catalog = mp3_catalog(args.tracks, args.seconds)
    audio_seconds = args.tracks * args.seconds
    out = WORK / "featurize_out"
    shutil.rmtree(out, ignore_errors=True)
    runs = {
        "featurize (tagscale, DirectRunner, decoder auto)": [PYTHON, "-c", FEATURIZE, "--catalog", str(catalog), "--output", str(out)],
        "(a) librosa extractor": [PYTHON, "-c", LIBROSA, str(catalog)],
        "(b) ffmpeg decode only, one process per file": [PYTHON, "-c", FFMPEG_ONLY, str(catalog)],
        "(c) floor: soundfile + soxr + TF log-mel": [PYTHON, "-c", FLOOR, str(catalog)],
    }
    results = {}
    for name, command in runs.items():
        result = measure(command, env={"PYTHONPATH": str(WORK.parents[1])})
        work = internal_seconds(result["stdout"], "work")
        results[name] = {
            "cpu_s": round(result["cpu_s"], 2),
            "wall_s": round(result["wall_s"], 2),
            "work_wall_s": work,
            "x_realtime_per_cpu_s": round(audio_seconds / result["cpu_s"], 1),
            "x_realtime_per_wall_s": round(audio_seconds / result["wall_s"], 1),
            "x_realtime_work_only": round(audio_seconds / work, 1) if work else None,
            "detail": result["stdout"].strip().splitlines()[-1],
        }
        print(name, json.dumps(results[name]), flush=True)
    lines = [
        "## Featurize throughput (issue 2)",
        "",
        f"{args.tracks} MP3 tracks x {args.seconds:g} s (44.1 kHz stereo, 128 kb/s) = {audio_seconds:g} s of audio; "
        f"each method in its own process, sequential; CPU = user+sys of the process and its children. "
        f"Machine: {platform.machine()}, {__import__('os').cpu_count()} cores. 'work only' excludes interpreter start-up and imports.",
        "",
        "| method | CPU s | wall s | x realtime per CPU s | x realtime per wall s | x realtime, work only (wall) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['cpu_s']} | {r['wall_s']} | {r['x_realtime_per_cpu_s']} | {r['x_realtime_per_wall_s']} | {r['x_realtime_work_only']} |")
    lines += ["", "Breakdown of the floor: `" + results["(c) floor: soundfile + soxr + TF log-mel"]["detail"] + "`"]
    if args.marginal:
        big = mp3_catalog(args.marginal, args.seconds)
        shutil.rmtree(out, ignore_errors=True)
        run = measure([PYTHON, "-c", FEATURIZE, "--catalog", str(big), "--output", str(out)], env={"PYTHONPATH": str(WORK.parents[1])})
        small = results["featurize (tagscale, DirectRunner, decoder auto)"]
        extra_audio = (args.marginal - args.tracks) * args.seconds
        marginal_cpu = (run["cpu_s"] - small["cpu_s"]) / extra_audio
        marginal_wall = (run["wall_s"] - small["wall_s"]) / extra_audio
        fixed_cpu = small["cpu_s"] - marginal_cpu * audio_seconds
        librosa = results["(a) librosa extractor"]["x_realtime_per_cpu_s"]
        lines += [
            "",
            f"Fixed and per-track cost: featurize of {args.marginal} tracks took {run['cpu_s']:.1f} CPU s / {run['wall_s']:.1f} wall s. "
            f"The difference to {args.tracks} tracks gives the marginal rate: **{1 / marginal_cpu:.0f}x realtime per CPU s** "
            f"({1 / marginal_wall:.0f}x per wall s), i.e. {1 / marginal_cpu / librosa:.2f}x the librosa extractor's rate; "
            f"the fixed cost of a run (interpreter, TensorFlow/Beam/tf.Transform imports, graph construction, tracing "
            f"and saving the transform) is about {fixed_cpu:.0f} CPU s.",
        ]
        print(json.dumps({"marginal_x_per_cpu_s": 1 / marginal_cpu, "fixed_cpu_s": fixed_cpu}))
    update_benchmarks_md("featurize_throughput", "\n".join(lines))
    (WORK / "featurize_throughput.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
