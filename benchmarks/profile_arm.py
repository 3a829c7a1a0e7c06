"""Where one arm of the demo comparison spends its wall time (per-phase timers).

    .venv/bin/python benchmarks/profile_arm.py --features FEATURES [--frontend spectrogram] [--fraction 1.0]

Runs ``trainer.task.train_and_evaluate`` with the demo's comparison settings (``infra.demo.chain``)
and times: setup (open features, count, build, compile), each training step (the first one
apart: it includes tracing the train function), each validation pass (the first apart: it
traces the test function), every callback hook, the model save, the per-track test evaluation
and the export. The input pipeline runs inside the train step (Keras pulls the next batch
inside its ``tf.function``), so it is also timed alone: one pass over the training split.
Prints a Markdown table; ``--json`` writes the raw numbers.

``--step-costs`` instead times one training step of each demo network in CPU seconds on one
TensorFlow thread (``time.process_time``: less sensitive to a shared machine's load than wall
time), built from Keras' own layers and with ``model.fast_layers``. ``--op-costs`` splits one
training step of the ``--frontend`` network by TensorFlow op type (a TF profiler trace).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end")


def timed_callbacks(seconds: dict):
    """A wrapper of :func:`trainer.fitting.fit_callbacks`: every hook of every callback timed."""

    def wrap(name, hook):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - start

        return timed

    def instrument(fit_callbacks):
        def timed_fit_callbacks(*args):
            callbacks = fit_callbacks(*args)
            for callback in callbacks:
                for hook in HOOKS:
                    setattr(callback, hook, wrap(type(callback).__name__, getattr(callback, hook)))
            return [StepTimer(seconds), *callbacks]

        return timed_fit_callbacks

    return instrument


def make_step_timer(keras):
    class _StepTimer(keras.callbacks.Callback):
        """Times every train step and validation pass; the first of each apart (tracing)."""

        def __init__(self, seconds):
            super().__init__()
            self.seconds = seconds
            self.steps, self.valid = [], []

        def on_train_batch_begin(self, batch, logs=None):
            self._step = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.steps.append(time.perf_counter() - self._step)

        def on_test_begin(self, logs=None):
            self._valid = time.perf_counter()

        def on_test_end(self, logs=None):
            self.valid.append(time.perf_counter() - self._valid)

        def on_train_end(self, logs=None):
            self.seconds["steps"] = self.steps
            self.seconds["valid"] = self.valid

    return _StepTimer


StepTimer = None


def input_pass(features_dir: str, frontend: str, fraction: float, batch_size: int) -> tuple[float, int]:
    """Seconds and examples of one pass over the training input alone (no model)."""
    from trainer import inputs

    features = inputs.open_features(features_dir, [frontend])
    data = inputs.make_dataset(features, "train", frontend, batch_size=batch_size, training=True, fraction=fraction)
    start, n = time.perf_counter(), 0
    for x, _ in data:
        n += int(x.shape[0])
    return time.perf_counter() - start, n


def profile(features_dir: str, frontend: str, fraction: float, extra: list[str]) -> dict:
    import keras

    from infra.demo import chain as demo
    from trainer import task

    global StepTimer
    StepTimer = make_step_timer(keras)
    flags = list(demo.COMPARE_FLAGS)
    flags = [f for i, f in enumerate(flags) if f != "--fractions" and (i == 0 or flags[i - 1] != "--fractions")]
    job = tempfile.mkdtemp(prefix="profile_arm_")
    args = task.parse_args(
        [
            "--features",
            features_dir,
            "--frontend",
            frontend,
            "--job-dir",
            job,
            "--fraction",
            str(fraction),
            *flags,
            *extra,
        ]
    )
    seconds = collections.defaultdict(float)
    start = time.perf_counter()
    from trainer import fitting

    untimed = fitting.fit_callbacks
    fitting.fit_callbacks = timed_callbacks(seconds)(untimed)
    try:
        result = task.train_and_evaluate(args)
    finally:
        fitting.fit_callbacks = untimed
    total = time.perf_counter() - start
    input_s, input_examples = input_pass(features_dir, frontend, fraction, args.batch_size)
    return {
        "frontend": frontend,
        "fraction": fraction,
        "total_s": total,
        "phases_s": result.evaluation["phases_s"],
        "epochs": result.evaluation["epochs_trained"],
        "examples": result.evaluation["train"]["examples"],
        "steps": seconds.pop("steps"),
        "valid": seconds.pop("valid"),
        "callbacks_s": dict(seconds),
        "input_pass_s": input_s,
        "input_examples": input_examples,
    }


def demo_overrides(frontend: str) -> dict:
    """The NetworkConfig overrides of the demo's comparison for ``frontend``."""
    from infra.demo import chain as demo
    from trainer import compare, flags

    args = compare.build_parser().parse_args(["--features", "-", "--output", "-", *demo.COMPARE_FLAGS])
    return flags.network_overrides(args, frontend)


def step_cpu_s(model, batch: int, steps: int) -> float:
    """CPU seconds of this process per training step (forward, backward, Adam) on random data."""
    import keras
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((batch, *model.input_shape[1:])).astype("float32"))
    y = tf.constant((rng.random((batch, model.get_layer("backend_scores").units)) < 0.2).astype("float32"))
    optimizer = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.BinaryCrossentropy()

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True)["scores"])
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    step()  # trace
    start = time.process_time()
    for _ in range(steps):
        step()
    return (time.process_time() - start) / steps


def step_costs(batch: int = 16, steps: int = 10) -> str:
    """CPU s per training step of the demo's networks on one TensorFlow thread, as a Markdown table.

    Each network is timed built from Keras' own Conv1D / Conv2D / BatchNormalization /
    MaxPooling1D (what ``model.fast_layers`` replaces) and as :func:`model.network.build_model`
    builds it.
    """
    from unittest import mock

    import keras
    import tensorflow as tf

    from model import network

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    plain = {
        "TimbralConv": keras.layers.Conv2D,
        "FrameConv": keras.layers.Conv1D,
        "FusedBatchNorm": keras.layers.BatchNormalization,
        "BlockMaxPool": keras.layers.MaxPooling1D,
    }
    rows = []
    for frontend in ("spectrogram", "waveform"):
        with mock.patch.multiple(network, **plain):
            keras_s = step_cpu_s(network.build_model(frontend, 50, **demo_overrides(frontend)), batch, steps)
        fast_s = step_cpu_s(network.build_model(frontend, 50, **demo_overrides(frontend)), batch, steps)
        rows.append(f"| {frontend} | {keras_s:.3f} | {fast_s:.3f} | {keras_s / fast_s:.1f}x |")
    header = [
        f"| demo network, training step at batch {batch}, 1 thread "
        "| Keras layers, CPU s | fast layers, CPU s | speed-up |",
        "|---|---:|---:|---:|",
    ]
    return "\n".join(header + rows)


def op_costs(frontend: str, batch: int = 16, steps: int = 5, top: int = 15) -> str:
    """CPU ms per training step of each TensorFlow op type, from a TF profiler trace, as Markdown.

    One thread, the demo's network for ``frontend``; the trace's op durations summed by op type
    (XLA-compiled clusters are not named ops there and are left out).
    """
    import collections
    import glob

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from model import network

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    model = network.build_model(frontend, 50, **demo_overrides(frontend))
    step_cpu_s(model, batch, 1)  # builds and warms the step; the trace below repeats it
    logdir = tempfile.mkdtemp(prefix="op_costs_")
    tf.profiler.experimental.start(logdir)
    step_s = step_cpu_s(model, batch, steps)
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0], "rb") as handle:
        space.ParseFromString(handle.read())
    per_type = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and "/" in name:  # "scope/op_name:OpType", the TF ops
                    per_type[name.rsplit(":", 1)[1]] += event.duration_ps / 1e9 / (steps + 1)
    lines = [f"| op type ({frontend}, batch {batch}, 1 thread) | CPU ms / step |", "|---|---:|"]
    lines += [f"| {op} | {ms:.1f} |" for op, ms in per_type.most_common(top)]
    lines.append(f"| whole step (`process_time`, traced) | {1e3 * step_s:.0f} |")
    return "\n".join(lines)


def table(p: dict) -> str:
    steps, valid = p["steps"], p["valid"]
    phases = p["phases_s"]
    typical_step = sorted(steps)[len(steps) // 2]
    typical_valid = sorted(valid)[len(valid) // 2] if valid else 0.0
    trace_train = steps[0] - typical_step
    trace_valid = (valid[0] - typical_valid) if valid else 0.0
    callbacks = sum(p["callbacks_s"].values())
    steady_steps = sum(steps) - trace_train
    steady_valid = sum(valid) - trace_valid
    fit_other = phases["fit"] - sum(steps) - sum(valid) - callbacks
    rows = [
        ("setup: open features, count, build, compile", phases.get("setup", 0.0)),
        ("tracing: first train step beyond a typical one", trace_train),
        (f"train steps ({len(steps)}; input pipeline runs inside them)", steady_steps),
        ("tracing: first validation pass beyond a typical one", trace_valid),
        (f"validation ({len(valid)} passes, loss + 2 AUC metrics)", steady_valid),
        *[(f"callback {name}", value) for name, value in sorted(p["callbacks_s"].items(), key=lambda kv: -kv[1])],
        ("fit: rest (epoch loop, iterator creation, metric resets)", fit_other),
        ("save model.keras", phases.get("save_model", 0.0)),
        ("per-track test evaluation (predict + metrics)", phases.get("evaluate_test", 0.0)),
        ("export (serving SavedModel)", phases.get("export", 0.0)),
    ]
    total = p["total_s"]
    lines = ["| phase | seconds | share |", "|---|---:|---:|"]
    lines += [f"| {name} | {value:.1f} | {100 * value / total:.0f}% |" for name, value in rows]
    lines.append(f"| **arm total** | **{total:.1f}** | 100% |")
    rate = p["examples"] * p["epochs"] / max(steady_steps, 1e-9)
    lines += [
        "",
        f"Train-step rate: {rate:.0f} examples/s ({p['examples']} examples x {p['epochs']} epochs). "
        "Input alone (one pass over the training split, no model): "
        f"{p['input_examples'] / p['input_pass_s']:.0f} examples/s.",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", help="a featurized demo catalog (required unless --step-costs)")
    parser.add_argument("--frontend", default="spectrogram")
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--json", help="also write the raw numbers here")
    parser.add_argument(
        "--step-costs", action="store_true", help="only time a training step of each demo network (CPU s, 1 thread)"
    )
    parser.add_argument(
        "--op-costs", action="store_true", help="only time each op type of a training step of --frontend (TF profiler)"
    )
    args, extra = parser.parse_known_args(argv)
    if args.op_costs:
        print(op_costs(args.frontend))
        return 0
    if args.step_costs:
        print(step_costs())
        return 0
    if not args.features:
        parser.error("--features is required")
    result = profile(args.features, args.frontend, args.fraction, extra)
    print(table(result))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
