"""The training input alone, random crops against the grid: examples/s of one epoch, side by side.

    .venv/bin/python benchmarks/crop_throughput.py [--tracks 256] [--seconds 29.1] [--repeats 3] [--no-write] [--quick]

Writes (once, under benchmarks/work/) training shards of MagnaTagATune-length tracks (29.1 s: 9
whole patches and a 136-frame tail each, random signal) laid out as featurize writes them, 8
shards, then for each front-end reads whole
epochs of :func:`trainer.recipe.training_data` under ``--epoch-patches grid`` and ``random``
(batch 32, the default shuffle buffer), alternating the two ``--repeats`` times after one
warm-up epoch each, and reports the median examples/s of each and their ratio. No model runs:
this is what a GPU would be fed at most. The machine may be shared: the ratio of two rates
measured in alternation is the figure to read. Target: random >= 0.8x grid. Results go to
BENCHMARKS.md (section ``crop_throughput``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import WORK, update_benchmarks_md  # noqa: E402


def long_features(n_tracks: int, seconds: float, n_shards: int = 8) -> str:
    """Shards as featurize lays them out (consecutive patches, the tail on the last patch's record),
    written directly with random signal: the input pipeline's cost does not depend on the audio."""
    import json

    import numpy as np
    import tensorflow as tf

    from model import dsp
    from pipelines.shards import encode_examples, shard_name

    root = WORK / f"crop_shards_{n_tracks}x{seconds:g}"
    features = root / "features"
    if (features / "metadata.json").exists():
        return str(features)
    n_samples = int(seconds * dsp.SAMPLE_RATE)
    patches, tail = dsp.n_patches(n_samples), dsp.tail_frames(n_samples)
    rng = np.random.default_rng(0)
    mel = rng.normal(size=(patches * dsp.PATCH_FRAMES + tail, dsp.N_MELS)).astype("<f4")
    wave = rng.integers(-3000, 3000, (patches * dsp.PATCH_FRAMES + tail) * dsp.HOP_LENGTH + 256, dtype="<i2")
    names = {kind: [shard_name(kind, "train", i, n_shards) for i in range(n_shards)] for kind in ("mel", "waveform")}
    # valid and test only need to exist for the features folder to open: the first train shard
    files = {kind: {"train": names[kind], "valid": names[kind][:1], "test": names[kind][:1]} for kind in names}
    for kind in files:
        (features / kind).mkdir(parents=True, exist_ok=True)
    writers = {kind: [tf.io.TFRecordWriter(str(features / name)) for name in files[kind]["train"]] for kind in files}
    for t in range(n_tracks):
        labels = np.float32(rng.integers(0, 2, 16))
        for k in range(patches):
            last = (mel[patches * dsp.PATCH_FRAMES :], wave[patches * dsp.PATCH_HOP_SAMPLES + 256 :])
            mel_record, wave_record = encode_examples(
                f"track-{t:05d}".encode(),
                k,
                labels,
                mel[k * dsp.PATCH_FRAMES : (k + 1) * dsp.PATCH_FRAMES],
                wave[k * dsp.PATCH_HOP_SAMPLES : k * dsp.PATCH_HOP_SAMPLES + dsp.PATCH_SAMPLES],
                last if k == patches - 1 and tail else None,
            )
            writers["mel"][t % n_shards].write(mel_record)
            writers["waveform"][t % n_shards].write(wave_record)
    for writer in (w for ws in writers.values() for w in ws):
        writer.close()
    metadata = {
        "tags": [f"tag{i}" for i in range(16)],
        "top_k": 16,
        "files": files,
        "splits": {"train": {"tracks": n_tracks, "examples": n_tracks * patches}},
    }
    (features / "metadata.json").write_text(json.dumps(metadata))
    return str(features)


def epoch_rate(data, counter, epoch: int, examples: int) -> tuple[float, float]:
    """Examples per wall second and per CPU second (every thread of this process) of one epoch."""
    counter.epoch.assign(epoch)
    start, cpu = time.perf_counter(), time.process_time()
    seen = sum(int(x.shape[0]) for x, _ in data)
    assert seen == examples, (seen, examples)
    return examples / (time.perf_counter() - start), examples / (time.process_time() - cpu)


def measure(features_dir: str, frontend: str, *, repeats: int, batch_size: int) -> dict:
    from trainer import inputs, recipe

    features = inputs.open_features(features_dir, [frontend])
    counts = inputs.count_split(features, "train")
    pipelines = {}
    for mode in ("grid", "random"):
        args = argparse.Namespace(epoch_patches=mode, batch_size=batch_size, fraction=1.0, seed=0, shuffle_buffer=512)
        data, examples, callbacks = recipe.training_data(args, features, frontend, counts)
        pipelines[mode] = (data, callbacks[0], examples)
    rates = {mode: [] for mode in pipelines}
    cpu_rates = {mode: [] for mode in pipelines}
    for mode, (data, counter, examples) in pipelines.items():
        epoch_rate(data, counter, 0, examples)  # warm-up: tracing, file cache
    for epoch in range(1, repeats + 1):
        for mode, (data, counter, examples) in pipelines.items():
            wall, cpu = epoch_rate(data, counter, epoch, examples)
            rates[mode].append(wall)
            cpu_rates[mode].append(cpu)
    ratios = [r / g for r, g in zip(rates["random"], rates["grid"])]
    return {
        "frontend": frontend,
        "tracks": counts["tracks"],
        "patches": counts["examples"],
        "grid": statistics.median(rates["grid"]),
        "random": statistics.median(rates["random"]),
        "ratios": ratios,
        "ratio": statistics.median(ratios),
        "grid_cpu": statistics.median(cpu_rates["grid"]),
        "random_cpu": statistics.median(cpu_rates["random"]),
        "cpu_ratio": statistics.median(cpu_rates["random"]) / statistics.median(cpu_rates["grid"]),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=29.1)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per mode, alternating (3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--quick", action="store_true", help="64 tracks, 2 repeats (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.tracks, args.repeats = min(args.tracks, 64), min(args.repeats, 2)

    import tensorflow as tf

    features = long_features(args.tracks, args.seconds)
    rows = [
        measure(features, fe, repeats=args.repeats, batch_size=args.batch_size) for fe in ("waveform", "spectrogram")
    ]
    for row in rows:
        print(
            f"{row['frontend']:<12} grid {row['grid']:7.0f} examples/s  random {row['random']:7.0f} examples/s  "
            f"random/grid {row['ratio']:.2f} (per repeat: {', '.join(f'{r:.2f}' for r in row['ratios'])}); "
            f"per CPU second: grid {row['grid_cpu']:.0f}, random {row['random_cpu']:.0f}, {row['cpu_ratio']:.2f}"
        )
    body = [
        "### Training input: random crops against the grid",
        "",
        f"`benchmarks/crop_throughput.py`: {args.tracks} training tracks x {args.seconds:g} s (9 whole "
        "patches and a 136-frame tail each, random signal) in 8 shards laid out as featurize writes them; "
        "one epoch of `trainer.recipe.training_data` "
        f"(batch {args.batch_size}, one example per track) under `--epoch-patches grid` and `random`, one warm-up "
        f"epoch each, then {args.repeats} alternating timed epochs; median examples/s, no model. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, CPU only; TensorFlow {tf.__version__}. "
        "Target: random >= 0.8x grid. Per CPU second: examples over the CPU time of every thread of the "
        "process in the epoch, the work each example costs, which a shared machine disturbs less than the wall "
        "clock.",
        "",
        "| front-end | training tracks (patches) | grid examples/s | random examples/s | random / grid (median of "
        "the repeats' ratios; each) | grid / random per CPU s | random / grid per CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    body += [
        f"| {r['frontend']} | {r['tracks']} ({r['patches']}) | {r['grid']:.0f} | {r['random']:.0f} | "
        f"{r['ratio']:.2f} ({', '.join(f'{x:.2f}' for x in r['ratios'])}) | "
        f"{r['grid_cpu']:.0f} / {r['random_cpu']:.0f} | {r['cpu_ratio']:.2f} |"
        for r in rows
    ]
    if not args.no_write:
        update_benchmarks_md("crop_throughput", "\n".join(body))
        print("updated BENCHMARKS.md (crop_throughput)")
    import gc

    gc.collect()
    gc.freeze()  # as the other benchmarks: a clean interpreter exit after TensorFlow
    return 0


if __name__ == "__main__":
    sys.exit(main())
