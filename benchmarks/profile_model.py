"""Where the musicnn-mtt serving model spends its time: CPU ms and GFLOPS per part, two forms.

    .venv/bin/python benchmarks/profile_model.py [--batch 16] [--threads 1] [--repeats 5] [--tflite]

Each part runs alone as a tf.function on random inputs of its real shape (batch 16 patches of
3 s); the figure is the best of ``--repeats`` CPU times (user+sys of this process) divided by the
batch. ``--threads 1`` pins TensorFlow to one thread, so CPU ms are one core's work. Parts of the
Keras form are the layers of :func:`model.network.build_model`; parts of the fast form are those
of :mod:`model.fast_frontend` at its default block sizes, next to other block sizes and the forms
it replaced (one Conv2D per timbral layer, one unblocked banded GEMM for the temporal convs), which
are rebuilt here from the same variables. The last column is each form's largest difference from
the Keras form (the part's output, or the scores for a whole model). ``--tflite`` also times the
whole fast model converted to TFLite (XNNPACK). The table goes to BENCHMARKS.md (``tag_profile``).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from common import REPO, update_benchmarks_md

sys.path.insert(0, str(REPO))

PATCH_SECONDS = 3.0  # one patch is 187 frames of 16 ms = 2.99 s; 3 s is the figure used throughout


def flops(batch_frames=187, mels=96) -> dict:
    """Multiply-adds x 2 per patch of each part of the musicnn preset (counted from the shapes)."""
    timbral = [(7, 38, 204), (7, 67, 204)]
    parts = {f"timbral {w}x{h}": 2 * batch_frames * (mels - h + 1) * w * h * filters for w, h, filters in timbral}
    parts["temporal 128/64/32 (direct)"] = 2 * batch_frames * mels * (128 + 64 + 32) * 51
    parts["temporal as one banded GEMM"] = 2 * batch_frames * mels * batch_frames * 153
    for block in (16, 32, 64):  # (block + L - 1) multiply-adds per output over ceil(187 / block) blocks
        frames = -(-batch_frames // block) * block
        parts[f"temporal, time blocks of {block}"] = 2 * frames * mels * 51 * sum(block + n - 1 for n in (128, 64, 32))
    for block in (1, 2, 4, 8, 59):
        for w, h, filters in timbral:
            n_out = mels - h + 1
            blocks = -(-n_out // min(block, n_out))
            parts[f"timbral {w}x{h}, frequency blocks of {block}"] = (
                2 * batch_frames * blocks * min(block, n_out) * filters * w * (min(block, n_out) + h - 1)
            )
    parts["back-end"] = 2 * batch_frames * 7 * 64 * (561 + 64 + 64) + 2 * (1506 * 200 + 200 * 50)
    parts["log-mel"] = 2 * 187 * (5 * 512 * 9 + 257 * 96)  # ~FFT + mel matrix
    return parts


def cpu_ms(fn, args, batch: int, repeats: int) -> float:
    fn(*args)  # trace and warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn(*args)
        best = min(best, time.process_time() - start)
    return 1000 * best / batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tflite", action="store_true")
    parser.add_argument("--inter", type=int, help="inter-op threads (default: --threads)")
    parser.add_argument(
        "--concurrent",
        type=int,
        help="only time N concurrent calls of the serving module (waveform in), as tagging runs them",
    )
    args = parser.parse_args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter or args.threads)
    from model import dsp, fast_frontend, pretrained

    package = pretrained.unpack_wheel(pretrained.download_wheel())
    keras_model, _ = pretrained.build_musicnn_model(package, pretrained.MODELS["musicnn-mtt"])
    fast = fast_frontend.FastSpectrogramModel(keras_model)
    rng = np.random.default_rng(0)
    b = args.batch
    waveform = tf.constant(rng.normal(0, 0.1, (b, dsp.PATCH_SAMPLES)).astype(np.float32))
    if args.concurrent:
        return concurrent_calls(keras_model, waveform, args)
    log_mel = dsp.log_mel_patches(waveform)
    image = tf.nn.batch_normalization(
        log_mel, *(fast.input_bn[k] for k in ("mean", "variance", "offset", "scale", "epsilon"))
    )[..., None]
    get = keras_model.get_layer
    f = flops()

    def keras_timbral(i):
        def run(x):
            y = get(f"timbral_{i}_bn")(get(f"timbral_{i}_conv")(get(f"timbral_{i}_pad")(x)), training=False)
            return tf.reduce_max(y, axis=2)

        return run

    def keras_temporal(x):
        return tf.concat(
            [
                tf.reduce_max(get(f"temporal_{i}_bn")(get(f"temporal_{i}_conv")(x), training=False), axis=2)
                for i in range(3)
            ],
            axis=-1,
        )

    def fast_timbral(model, i):
        conv, bn, pad = model.timbral[i]

        def run(x):
            rows = model.shifted_bands(x[..., 0], int(conv.kernel.shape[0]), pad)
            return tf.reshape(model._timbral(rows, conv, bn, int(x.shape[2])), [b, -1, int(conv.kernel.shape[-1])])

        return run

    def sizes(frequency_block=fast_frontend.FREQUENCY_BLOCK, time_block=fast_frontend.TIME_BLOCK):
        return fast_frontend.FastSpectrogramModel(keras_model, frequency_block, time_block)

    features = fast.frontend(log_mel)
    rows = [("log-mel (STFT + mel matrix + log)", "both", tf.function(dsp.log_mel_patches), (waveform,), f["log-mel"])]
    for i, (w, h) in enumerate([(7, 38), (7, 67)]):
        rows += [
            (
                f"timbral {w}x{h} x204: conv, ReLU, BN, max over freq",
                "Keras",
                keras_timbral(i),
                (image,),
                f[f"timbral {w}x{h}"],
            ),
            (
                f"timbral {w}x{h}: Conv2D (signed kernel), max, then ReLU/BN",
                "fast before",
                previous_timbral(fast, i),
                (image,),
                f[f"timbral {w}x{h}"],
            ),
        ]
        for block in (1, 2, 4, 8, 59):
            default = " (default)" if block == fast_frontend.FREQUENCY_BLOCK else ""
            name = f"timbral {w}x{h}: banded GEMMs, blocks of {block} frequencies{default}, max, ReLU/BN"
            rows.append(
                (
                    name,
                    "fast",
                    fast_timbral(sizes(frequency_block=block), i),
                    (image,),
                    f[f"timbral {w}x{h}, frequency blocks of {block}"],
                )
            )
    rows += [
        (
            "temporal: Conv2D (L,1) 128/64/32 x51, ReLU, BN, max",
            "Keras",
            keras_temporal,
            (image,),
            f["temporal 128/64/32 (direct)"],
        ),
        (
            "temporal: one banded GEMM, max, then ReLU/BN",
            "fast before",
            previous_temporal(fast),
            (image[..., 0],),
            f["temporal as one banded GEMM"],
        ),
    ]
    for block in (16, 32, 64):
        default = " (default)" if block == fast_frontend.TIME_BLOCK else ""
        name = f"temporal: banded GEMM per kernel, blocks of {block} frames{default}, max, ReLU/BN"
        rows.append(
            (name, "fast", sizes(time_block=block)._temporal, (image[..., 0],), f[f"temporal, time blocks of {block}"])
        )
    rows += [
        (
            "back-end (3 convs, pooling, dense)",
            "both",
            lambda x: fast.backend(x, training=False),
            (features,),
            f["back-end"],
        ),
        ("whole model, log-mel in", "Keras", lambda x: keras_model(x, training=False), (log_mel,), None),
        ("whole model, log-mel in (default blocks)", "fast", fast.__call__, (log_mel,), None),
    ]
    lines = [
        f"Batch {b}, {args.threads} TensorFlow thread(s); CPU ms per 3-s patch (best of {args.repeats}); "
        "GFLOPS = multiply-adds done (zeros of a banded matrix included) x 2 / CPU time. "
        "'x realtime' = 3 s / CPU time of the part. 'max diff': largest difference from the Keras form "
        "(the part's output; scores for a whole model).",
        "",
        "| part | form | CPU ms / patch | GFLOPS | x realtime per CPU s | max diff |",
        "|---|---|---:|---:|---:|---:|",
    ]
    references = {}
    for name, form, fn, inputs, count in rows:
        fn = tf.function(fn)
        ms = cpu_ms(fn, inputs, b, args.repeats)
        gflops = f"{count / ms / 1e6:.1f}" if count else "-"
        diff = difference(name, form, fn(*inputs), references)
        lines.append(f"| {name} | {form} | {ms:.1f} | {gflops} | {PATCH_SECONDS * 1000 / ms:.0f} | {diff} |")
        print(lines[-1], flush=True)
    if args.tflite:
        lines.append(tflite_row(fast, log_mel, b, args))
        print(lines[-1], flush=True)
    update_benchmarks_md("tag_profile", "### Where the musicnn-mtt model's time goes (profile)\n\n" + "\n".join(lines))
    return 0


def concurrent_calls(keras_model, waveform, args, rounds: int = 8) -> int:
    """CPU and wall ms per patch of ``--concurrent`` model calls at once (best of ``--repeats``)."""
    import concurrent.futures

    from model import serving

    module = serving.build_serving_module(keras_model, "spectrogram")
    calls = args.concurrent * rounds
    with concurrent.futures.ThreadPoolExecutor(args.concurrent) as pool:
        list(pool.map(lambda _: module.serve(waveform), range(args.concurrent)))  # trace and warm up
        best_cpu = best_wall = float("inf")
        for _ in range(args.repeats):
            cpu, wall = time.process_time(), time.perf_counter()
            list(pool.map(lambda _: module.serve(waveform), range(calls)))
            best_cpu = min(best_cpu, time.process_time() - cpu)
            best_wall = min(best_wall, time.perf_counter() - wall)
    patches = calls * len(waveform)
    print(
        f"{args.concurrent} concurrent calls, batch {len(waveform)}, "
        f"intra {args.threads} inter {args.inter or args.threads}: "
        f"CPU {1000 * best_cpu / patches:.1f} ms/patch, wall {1000 * best_wall / patches:.1f} ms/patch"
    )
    return 0


def difference(name: str, form: str, output, references: dict) -> str:
    """Largest |difference| of ``output`` from the Keras form of the same part (first row of it)."""
    import tensorflow as tf

    part = name.split(":")[0].split(" x")[0].split(",")[0]
    output = output["scores"] if isinstance(output, dict) else output
    if form == "Keras":
        references[part] = output
    if form in ("Keras", "both") or part not in references:
        return "-"
    return f"{float(tf.reduce_max(tf.abs(output - references[part]))):.1e}"


def previous_timbral(fast, i):
    """The timbral form served before the banded GEMMs: one Conv2D with sign-flipped kernels."""
    import tensorflow as tf

    from model import fast_frontend

    conv, bn, pad = fast.timbral[i]

    def run(image):
        sign = fast_frontend._sign([bn["scale"]])
        padded = tf.pad(image, [[0, 0], list(pad), [0, 0], [0, 0]])
        z = tf.nn.conv2d(padded, conv.kernel * sign, strides=1, padding="VALID")
        maxed = tf.reduce_max(z, axis=2) * sign
        return fast_frontend._apply_bn(tf.nn.relu(maxed + conv.bias), bn)

    return run


def previous_temporal(fast):
    """The temporal form served before time blocks: one (187, 187 x 153) banded matrix."""
    import tensorflow as tf

    from model import fast_frontend

    n_frames = fast.n_frames
    sign = fast_frontend._sign([bn["scale"] for _, bn in fast.temporal])
    blocks = []
    for conv, _ in fast.temporal:
        kernel = conv.kernel[:, 0, 0, :]
        length = int(kernel.shape[0])
        tap = np.arange(n_frames)[:, None] - np.arange(n_frames)[None, :] + (length - 1) // 2  # "same" padding
        padded = tf.concat([kernel, tf.zeros([1, kernel.shape[1]])], axis=0)
        blocks.append(tf.gather(padded, np.where((tap >= 0) & (tap < length), tap, length)))
    matrix = tf.transpose(tf.reshape(tf.concat(blocks, axis=-1), [n_frames, -1]) * tf.tile(sign, [n_frames]))
    bias = tf.concat([conv.bias for conv, _ in fast.temporal], axis=0)
    bn = {key: tf.concat([b[key] for _, b in fast.temporal], axis=0) for key in ("scale", "offset", "mean", "variance")}
    bn["epsilon"] = fast.temporal[0][1]["epsilon"]

    def run(x):
        bands = tf.reshape(tf.transpose(x, [1, 2, 0]), [n_frames, -1])
        z = tf.reshape(tf.linalg.matmul(matrix, bands), [n_frames, int(sign.shape[0]), int(x.shape[2]), -1])
        maxed = tf.transpose(tf.reduce_max(z, axis=2), [2, 0, 1]) * sign
        return fast_frontend._apply_bn(tf.nn.relu(maxed + bias), bn)

    return run


def tflite_row(fast, log_mel, batch: int, args) -> str:
    """The whole fast model (log-mel in) converted to TFLite, run by XNNPACK."""
    import tensorflow as tf

    spec = tf.TensorSpec(log_mel.shape, tf.float32)
    concrete = tf.function(fast.__call__, input_signature=[spec]).get_concrete_function()
    content = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fast.backend).convert()
    interpreter = tf.lite.Interpreter(model_content=content, num_threads=args.threads)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    data = log_mel.numpy()

    def run(x):
        interpreter.set_tensor(index, x)
        interpreter.invoke()

    ms = cpu_ms(run, (data,), batch, args.repeats)
    return f"| whole model, log-mel in, TFLite + XNNPACK | fast | {ms:.1f} | - | {PATCH_SECONDS * 1000 / ms:.0f} |"


if __name__ == "__main__":
    sys.exit(main())
