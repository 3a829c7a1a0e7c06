"""Where the musicnn-mtt serving model spends its time: CPU ms and GFLOPS per part, two forms.

    .venv/bin/python benchmarks/profile_model.py [--batch 16] [--threads 1] [--repeats 5] [--tflite]

Each part runs alone as a tf.function on random inputs of its real shape (batch 16 patches of
3 s); the figure is the best of ``--repeats`` CPU times (user+sys of this process) divided by the
batch. ``--threads 1`` pins TensorFlow to one thread, so CPU ms are one core's work. Parts of the
Keras form are the layers of :func:`model.network.build_model`; parts of the fast form are those
of :mod:`model.fast_frontend`. ``--tflite`` also times the whole fast model converted to TFLite
(XNNPACK). The table goes to BENCHMARKS.md (section ``tag_profile``).
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
    args = parser.parse_args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from model import dsp, fast_frontend, pretrained

    package = pretrained.unpack_wheel(pretrained.download_wheel())
    keras_model, _ = pretrained.build_musicnn_model(package, pretrained.MODELS["musicnn-mtt"])
    fast = fast_frontend.FastSpectrogramModel(keras_model)
    rng = np.random.default_rng(0)
    b = args.batch
    waveform = tf.constant(rng.normal(0, 0.1, (b, dsp.PATCH_SAMPLES)).astype(np.float32))
    log_mel = dsp.log_mel_patches(waveform)
    image = tf.nn.batch_normalization(
        log_mel, *(fast.input_bn[k] for k in ("mean", "variance", "offset", "scale", "epsilon"))
    )[..., None]
    get = keras_model.get_layer

    def keras_timbral(i):
        def run(x):
            y = get(f"timbral_{i}_bn")(get(f"timbral_{i}_conv")(get(f"timbral_{i}_pad")(x)), training=False)
            return tf.reduce_max(y, axis=2)

        return run

    def keras_temporal(x):
        return [
            tf.reduce_max(get(f"temporal_{i}_bn")(get(f"temporal_{i}_conv")(x), training=False), axis=2)
            for i in range(3)
        ]

    features = fast.frontend(log_mel)
    rows = [
        (
            "log-mel (STFT + mel matrix + log)",
            "both",
            tf.function(dsp.log_mel_patches),
            (waveform,),
            flops()["log-mel"],
        ),
        (
            "timbral 7x38 x204: conv, ReLU, BN, max over freq",
            "Keras",
            tf.function(keras_timbral(0)),
            (image,),
            flops()["timbral 7x38"],
        ),
        (
            "timbral 7x67 x204: conv, ReLU, BN, max over freq",
            "Keras",
            tf.function(keras_timbral(1)),
            (image,),
            flops()["timbral 7x67"],
        ),
        (
            "temporal 128/64/32 x51: Conv2D (L,1), ReLU, BN, max",
            "Keras",
            tf.function(keras_temporal),
            (image,),
            flops()["temporal 128/64/32 (direct)"],
        ),
        (
            "timbral 7x38: conv (signed kernel), max, then ReLU/BN",
            "fast",
            tf.function(lambda x: fast._timbral(x, *fast.timbral[0])),
            (image,),
            flops()["timbral 7x38"],
        ),
        (
            "timbral 7x67: conv (signed kernel), max, then ReLU/BN",
            "fast",
            tf.function(lambda x: fast._timbral(x, *fast.timbral[1])),
            (image,),
            flops()["timbral 7x67"],
        ),
        (
            "temporal: one banded GEMM, max, then ReLU/BN",
            "fast",
            tf.function(fast._temporal),
            (image[..., 0],),
            flops()["temporal as one banded GEMM"],
        ),
        (
            "back-end (3 convs, pooling, dense)",
            "both",
            tf.function(lambda f: fast.backend(f, training=False)),
            (features,),
            flops()["back-end"],
        ),
        ("whole model, log-mel in", "Keras", tf.function(lambda x: keras_model(x, training=False)), (log_mel,), None),
        ("whole model, log-mel in", "fast", tf.function(fast.__call__), (log_mel,), None),
    ]
    lines = [
        f"Batch {b}, {args.threads} TensorFlow thread(s); CPU ms per 3-s patch (best of {args.repeats}); "
        "GFLOPS = counted multiply-adds x 2 / CPU time. 'x realtime' = 3 s / CPU time of the part.",
        "",
        "| part | form | CPU ms / patch | GFLOPS | x realtime per CPU s |",
        "|---|---|---:|---:|---:|",
    ]
    for name, form, fn, inputs, count in rows:
        ms = cpu_ms(fn, inputs, b, args.repeats)
        gflops = f"{count / ms / 1e6:.1f}" if count else "-"
        lines.append(f"| {name} | {form} | {ms:.1f} | {gflops} | {PATCH_SECONDS * 1000 / ms:.0f} |")
        print(lines[-1], flush=True)
    if args.tflite:
        lines.append(tflite_row(fast, log_mel, b, args))
        print(lines[-1], flush=True)
    update_benchmarks_md("tag_profile", "### Where the musicnn-mtt model's time goes (profile)\n\n" + "\n".join(lines))
    return 0


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
