"""A roofline for musicnn-mtt as tagging runs it: FLOPs per 3-s patch by layer group, one core's
time per patch, achieved GFLOPS, and one core's sgemm GFLOPS as the practical peak, in one run.

    .venv/bin/python benchmarks/roofline.py [--batch 16] [--repeats 7] [--cache-dir DIR] [--quick]

What runs is the serving graph of :mod:`model.serving`: waveform patches -> log-mel
(:func:`model.dsp.log_mel_patches`) -> :class:`model.fast_frontend.FastSpectrogramModel`'s front-end
(blocked banded GEMMs, the max over frequency/mel first) -> the Keras back-end's own layers.
Each layer group runs alone as a tf.function on inputs of its real shape at the tagging batch
size; its FLOPs are counted from the shapes of the ops that graph executes (benchmarks/flops.py:
MatMul/BatchMatMul/conv 2 per multiply-add, an RFFT 2.5 N log2 N), so the banded matrices' zeros
count: they are executed. "useful" is the same count on the Keras layers as written (direct
convs). Time is the best of ``--repeats`` process CPU times with TensorFlow on one thread (intra-
and inter-op), divided by the batch: one core's work, whatever else the machine runs. The whole
model is the exported SavedModel (what ``tagscale tag`` loads), timed the same way.

The peak is one core's fp32 sgemm on 2048 x 2048 matrices: ``tf.linalg.matmul`` (the oneDNN /
Eigen kernels the model's GEMMs use) and numpy's BLAS, both single-threaded; the ratio column
uses the larger. The table goes to BENCHMARKS.md (``roofline``) with the CPU model and flags.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # numpy's BLAS on one thread
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from common import PYTHON, REPO, cpu_flags, cpu_info, update_benchmarks_md  # noqa: E402
from flops import count_flops  # noqa: E402

sys.path.insert(0, str(REPO))

SGEMM_N = 2048
# Back-end layers by group (the rest of the back-end: Dropout, an identity at inference).
GROUPS = {
    "back-end convs": ("backend_0_", "backend_1_", "backend_2_"),
    "pooling": ("backend_time_pool", "backend_pool_", "backend_pooled"),
    "dense": ("backend_pooled_bn", "backend_dense", "backend_scores"),
}


def cpu_time(fn, args, repeats: int) -> float:
    """Best process CPU seconds of ``fn(*args)`` over ``repeats`` calls (after one warm-up call)."""
    fn(*args)
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        out = fn(*args)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        np.asarray(out)  # the result is computed, not pending
        best = min(best, time.process_time() - start)
    return best


def sgemm(repeats: int) -> dict:
    """Single-thread fp32 GFLOPS of an N x N x N product: TensorFlow's and numpy's."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((SGEMM_N, SGEMM_N), dtype=np.float32) for _ in range(2))
    work = 2 * SGEMM_N**3
    ta, tb = tf.constant(a), tf.constant(b)
    matmul = tf.function(tf.linalg.matmul)
    return {
        "tf.linalg.matmul": work / cpu_time(matmul, (ta, tb), repeats) / 1e9,
        "numpy": work / cpu_time(np.matmul, (a, b), repeats) / 1e9,
    }


def group_of(layer_name: str) -> str | None:
    for group, prefixes in GROUPS.items():
        if any(layer_name.startswith(p) for p in prefixes):
            # backend_pooled_bn is dense (a BN before the dense layer), not pooling
            if group == "pooling" and layer_name == "backend_pooled_bn":
                continue
            return group
    return None


def layer_parts(fast, batch: int):
    """[(group, layer, tf.function, inputs)] for every back-end layer, on inputs of its real shape."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    parts = []
    for layer in fast.backend.layers:
        group = group_of(layer.name)
        if group is None:
            continue
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
        values = [tf.constant(rng.standard_normal((batch, *t.shape[1:]), dtype=np.float32)) for t in inputs]

        def call(*xs, layer=layer):
            return layer(list(xs) if len(xs) > 1 else xs[0], training=False)

        parts.append((group, layer.name, tf.function(call), values))
    return parts


def measure(args) -> dict:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if args.precision == "bfloat16":
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    from model import dsp, export, fast_frontend, pretrained

    model_dir = pretrained.resolve_model("musicnn-mtt", args.cache_dir)
    package = pretrained.unpack_wheel(pretrained.download_wheel(args.cache_dir), args.cache_dir)
    keras_model, _ = pretrained.build_musicnn_model(package, pretrained.MODELS["musicnn-mtt"])
    fast = fast_frontend.FastSpectrogramModel(keras_model)
    b = args.batch
    rng = np.random.default_rng(0)
    waveform = tf.constant(rng.normal(0, 0.1, (b, dsp.PATCH_SAMPLES)).astype(np.float32))
    log_mel = dsp.log_mel_patches(waveform)
    features = fast.frontend(log_mel)
    spec = lambda t: tf.TensorSpec(t.shape, tf.float32)  # noqa: E731
    groups = [
        ("front-end: log-mel", tf.function(dsp.log_mel_patches), (waveform,)),
        ("front-end: convs", tf.function(fast.frontend), (log_mel,)),
    ]
    results = {}
    for name, fn, inputs in groups:
        flops = sum(count_flops(fn.get_concrete_function(*map(spec, inputs))).values())
        results[name] = {"flops": flops, "cpu_s": cpu_time(fn, inputs, args.repeats)}
    # what the front-end's convs would be as written (direct Conv2D over (time, mel, 1))
    keras_frontend = keras_model.get_layer("spectrogram_features").output
    keras_fe = tf.function(lambda x: _submodel(keras_model, keras_frontend)(x, training=False))
    results["front-end: convs"]["useful"] = sum(count_flops(keras_fe.get_concrete_function(spec(log_mel))).values())
    assert tuple(features.shape) == (b, dsp.PATCH_FRAMES, features.shape[-1])
    for group, _layer, fn, inputs in layer_parts(fast, b):
        entry = results.setdefault(group, {"flops": 0, "cpu_s": 0.0})
        entry["flops"] += sum(count_flops(fn.get_concrete_function(*map(spec, inputs))).values())
        entry["cpu_s"] += cpu_time(fn, inputs, args.repeats)
    served = export.load_serving_model(model_dir)
    results["whole model (SavedModel)"] = {
        "flops": sum(e["flops"] for e in results.values()),
        "cpu_s": cpu_time(served.predict, (waveform,), args.repeats),
    }
    return {"batch": b, "precision": args.precision, "groups": results, "sgemm": sgemm(args.repeats)}


def _submodel(keras_model, output):
    import keras

    return keras.Model(keras_model.input, output)


def report(m: dict, bf16: dict | None, load: tuple) -> list[str]:
    peak_name, peak = max(m["sgemm"].items(), key=lambda kv: kv[1])
    b = m["batch"]
    lines = [
        "### Roofline of the musicnn-mtt model (`benchmarks/roofline.py`)",
        "",
        f"CPU: {cpu_info()}; load average at the start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "(time is process CPU on one TF thread, so other processes slow it only through shared "
        "caches and clocks).",
        "",
        f"One core's fp32 sgemm ({SGEMM_N}^3): "
        + ", ".join(f"{k} {v:.1f} GFLOPS" for k, v in m["sgemm"].items())
        + f"; the peak below is {peak_name}'s.",
        "",
        f"musicnn-mtt per 3-s patch at batch {b} (the tagging batch), one thread:",
        "",
        "| layer group | MFLOP executed | MFLOP useful | CPU ms | GFLOPS | of peak | share of time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    groups = m["groups"]
    whole = groups["whole model (SavedModel)"]["cpu_s"]
    for name, e in groups.items():
        ms = 1000 * e["cpu_s"] / b
        gflops = e["flops"] / e["cpu_s"] / 1e9
        useful = f"{e['useful'] / b / 1e6:.0f}" if "useful" in e else ""
        rate = f"{gflops:.1f} | {gflops / peak:.0%}" if e["flops"] else "- | -"  # maxima and means: no GEMM
        lines.append(
            f"| {name} | {e['flops'] / b / 1e6:.1f} | {useful} | {ms:.2f} | {rate} | {e['cpu_s'] / whole:.0%} |"
        )
    parts = sum(e["cpu_s"] for n, e in groups.items() if not n.startswith("whole"))
    lines += [
        "",
        f"Sum of the groups run alone: {1000 * parts / b:.2f} CPU ms per patch; the whole SavedModel "
        f"{1000 * whole / b:.2f} ({dsp_realtime(whole / b):.0f}x realtime per CPU s).",
    ]
    if bf16:
        w16 = bf16["groups"]["whole model (SavedModel)"]["cpu_s"]
        lines.append(
            f"With `--precision bfloat16` (oneDNN's bfloat16 rewrite; this CPU "
            f"{'has' if 'avx512_bf16' in cpu_flags() else 'lacks'} AVX512_BF16): whole model "
            f"{1000 * w16 / b:.2f} CPU ms per patch, {whole / w16:.2f}x float32."
        )
    return lines


def dsp_realtime(seconds_per_patch: float) -> float:
    return 2.992 / seconds_per_patch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="patches per call (the tagging default, %(default)s)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cache-dir", help="a tagscale cache holding musicnn-mtt (default: benchmarks/work/cache)")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--json", help="write the measurements here and print no table (used for bfloat16)")
    parser.add_argument("--no-bfloat16", action="store_true", help="skip the bfloat16 run (a second process)")
    parser.add_argument("--quick", action="store_true", help="3 repeats, no bfloat16 run")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.no_bfloat16 = 3, True
    if args.cache_dir is None:
        from tag_throughput import prepare_cache

        args.cache_dir = prepare_cache()
    load = os.getloadavg()
    m = measure(args)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(m, handle)
        return 0
    bf16 = None
    from runtime.machine import bfloat16_unavailable  # oneDNN aborts where it has no bfloat16 kernel

    if not args.no_bfloat16 and bfloat16_unavailable() is None:
        path = REPO / "benchmarks" / "work" / "roofline_bf16.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        command = [PYTHON, __file__, "--precision", "bfloat16", "--cache-dir", args.cache_dir, "--json", str(path)]
        subprocess.run(command + ["--batch", str(args.batch), "--repeats", str(args.repeats)], check=True)
        bf16 = json.loads(path.read_text())
    lines = report(m, bf16, load)
    print("\n".join(lines))
    update_benchmarks_md("roofline", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
