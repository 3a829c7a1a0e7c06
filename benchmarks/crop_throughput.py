"""The training input alone, random crops against the grid: examples/s of one epoch, side by side.

    .venv/bin/python benchmarks/crop_throughput.py [--tracks 64] [--seconds 29.1] [--repeats 3] [--no-write]

Makes (once, under benchmarks/work/) a demo catalog of MagnaTagATune-length tracks (29.1 s: 9
whole patches and a 136-frame tail each) and featurizes it, then for each front-end reads whole
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


def long_features(n_tracks: int, seconds: float) -> str:
    from infra.demo import catalog as demo_catalog
    from pipelines import featurize

    root = WORK / f"crop_demo_{n_tracks}x{seconds:g}"
    features = root / "features"
    if not (features / "metadata.json").exists():
        catalog = demo_catalog.make_demo_catalog(str(root / "catalog"), n_tracks=n_tracks, seed=0, duration_s=seconds)
        featurize.run(
            ["--catalog", catalog, "--output", str(features), "--top-k", "16"]
            + ["--valid-fraction", "0.1", "--test-fraction", "0.1", "--num-shards", "4"]
        )
    return str(features)


def epoch_rate(data, counter, epoch: int, examples: int) -> float:
    counter.epoch.assign(epoch)
    start = time.perf_counter()
    seen = sum(int(x.shape[0]) for x, _ in data)
    assert seen == examples, (seen, examples)
    return examples / (time.perf_counter() - start)


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
    for mode, (data, counter, examples) in pipelines.items():
        epoch_rate(data, counter, 0, examples)  # warm-up: tracing, file cache
    for epoch in range(1, repeats + 1):
        for mode, (data, counter, examples) in pipelines.items():
            rates[mode].append(epoch_rate(data, counter, epoch, examples))
    ratios = [r / g for r, g in zip(rates["random"], rates["grid"])]
    return {
        "frontend": frontend,
        "tracks": counts["tracks"],
        "patches": counts["examples"],
        "grid": statistics.median(rates["grid"]),
        "random": statistics.median(rates["random"]),
        "ratios": ratios,
        "ratio": statistics.median(ratios),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=29.1)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per mode, alternating (3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)

    import tensorflow as tf

    features = long_features(args.tracks, args.seconds)
    rows = [
        measure(features, fe, repeats=args.repeats, batch_size=args.batch_size) for fe in ("waveform", "spectrogram")
    ]
    for row in rows:
        print(
            f"{row['frontend']:<12} grid {row['grid']:7.0f} examples/s  random {row['random']:7.0f} examples/s  "
            f"random/grid {row['ratio']:.2f} (per repeat: {', '.join(f'{r:.2f}' for r in row['ratios'])})"
        )
    body = [
        "### Training input: random crops against the grid",
        "",
        f"`benchmarks/crop_throughput.py`: demo catalog of {args.tracks} tracks x {args.seconds:g} s (9 whole "
        "patches and a 136-frame tail each), featurized into 4 shards; one epoch of `trainer.recipe.training_data` "
        f"(batch {args.batch_size}, one example per track) under `--epoch-patches grid` and `random`, one warm-up "
        f"epoch each, then {args.repeats} alternating timed epochs; median examples/s, no model. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, CPU only; TensorFlow {tf.__version__}. "
        "Target: random >= 0.8x grid.",
        "",
        "| front-end | training tracks (patches) | grid examples/s | random examples/s | random / grid (per repeat) |",
        "|---|---:|---:|---:|---:|",
    ]
    body += [
        f"| {r['frontend']} | {r['tracks']} ({r['patches']}) | {r['grid']:.0f} | {r['random']:.0f} | "
        f"{r['ratio']:.2f} ({', '.join(f'{x:.2f}' for x in r['ratios'])}) |"
        for r in rows
    ]
    if not args.no_write:
        update_benchmarks_md("crop_throughput", "\n".join(body))
        print("updated BENCHMARKS.md (crop_throughput)")
    import gc

    gc.collect()
    gc.freeze()  # tf.Transform teardown segfault after featurize: freeze the heap so exit is clean
    return 0


if __name__ == "__main__":
    sys.exit(main())
