"""Run a ``tagscale`` command in this process and print its process CPU seconds by phase (JSON, last line).

    python benchmarks/phase_probe.py OUT.json featurize --catalog ... --output ...

Used by benchmarks/fixed_cost.py. Phases nest and each counts only its own CPU (a phase's
time minus that of the phases inside it), so they add up to the process's CPU:

- ``import <package>``: the first import of a heavy package (TensorFlow, Keras, Beam,
  tf.Transform, ...), caught at ``builtins.__import__``, its own part only.
- ``build pipeline``: from the command's start to Beam's ``Pipeline.run`` (argument checks, the
  transforms' construction, tf.Transform's tracing of the preprocessing graph).
- ``tf.Transform trace`` / ``SavedModel write`` / ``SavedModel load``: tf.Transform's
  ``trace_preprocessing_function`` and TensorFlow's ``tf.saved_model.save`` / ``load`` (the transform
  graph, the serving model), wherever they run.
- ``first model call``: the first ``ServingModel.predict`` (graph optimisation, kernel set-up).
- ``run pipeline (rest)``: the rest of ``Pipeline.run``: decoding, the work on the track, runner
  overhead. ``start-up`` is the interpreter's own start until this script runs.

The CPU is the whole process's (every thread), so a phase running while a Beam worker thread
works elsewhere takes that work too; with one track the overlap is small.
"""

from __future__ import annotations

import builtins
import functools
import json
import resource
import runpy
import sys
import threading
import time

PACKAGES = {
    "tensorflow": "import TensorFlow",
    "keras": "import Keras",
    "tf_keras": "import tf_keras",
    "apache_beam": "import Beam",
    "tensorflow_transform": "import tf.Transform (+tfx_bsl)",
    "tfx_bsl": "import tf.Transform (+tfx_bsl)",
    "pyarrow": "import pyarrow/pandas",
    "pandas": "import pyarrow/pandas",
    "sklearn": "import scikit-learn",
    "matplotlib": "import matplotlib",
    "scipy": "import scipy",
    "google": "import google (cloud, protobuf)",
    "trainer": "import trainer",
}
PATCHES = [  # (module, object path, phase, first call only)
    ("apache_beam.pipeline", "Pipeline.run", "run pipeline (rest)", False),
    ("tensorflow_transform.impl_helper", "trace_preprocessing_function", "tf.Transform trace", False),
    ("tensorflow._api.v2.saved_model", "save", "SavedModel write", False),  # tf.saved_model.save
    ("tensorflow._api.v2.saved_model", "load", "SavedModel load", False),
    ("model.export", "ServingModel.predict", "first model call", True),
]

totals: dict[str, float] = {}
stack: list[list] = []  # [phase, start CPU, CPU of nested phases]
lock = threading.RLock()


def enter(phase: str) -> None:
    with lock:
        stack.append([phase, time.process_time(), 0.0])


def leave() -> None:
    with lock:
        phase, start, nested = stack.pop()
        spent = time.process_time() - start
        totals[phase] = totals.get(phase, 0.0) + spent - nested
        if stack:
            stack[-1][2] += spent


def timed(fn, phase: str, once: bool):
    state = {"done": False}

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if once and state["done"]:
            return fn(*args, **kwargs)
        state["done"] = True
        enter(phase)
        try:
            return fn(*args, **kwargs)
        finally:
            leave()

    return wrapper


def apply_patches() -> None:
    for entry in list(PATCHES):
        module_name, path, phase, once = entry
        module = sys.modules.get(module_name)
        if module is None:
            continue
        owner, attr = module, path
        if "." in path:
            owner_name, attr = path.split(".")
            owner = getattr(module, owner_name, None)
        if owner is None or not hasattr(owner, attr):  # still being imported: patched on a later import
            continue
        PATCHES.remove(entry)
        setattr(owner, attr, timed(getattr(owner, attr), phase, once))


original_import = builtins.__import__
patching: list = []  # non-empty while apply_patches runs (it imports too)


def hooked_import(name, globals=None, locals=None, fromlist=(), level=0):
    top = name.split(".")[0] if level == 0 else ""
    phase = PACKAGES.get(top)
    if phase is None or top in sys.modules:
        module = original_import(name, globals, locals, fromlist, level)
    else:
        enter(phase)
        try:
            module = original_import(name, globals, locals, fromlist, level)
        finally:
            leave()
    if PATCHES and not patching:
        patching.append(True)
        try:
            apply_patches()
        finally:
            patching.pop()
    return module


def main() -> None:
    out, argv = sys.argv[1], sys.argv[2:]
    startup = time.process_time()
    builtins.__import__ = hooked_import
    sys.argv = ["tagscale", *argv]
    code = 0
    enter("build pipeline")
    try:
        runpy.run_module("infra.cli", run_name="__main__")
    except SystemExit as stop:
        code = stop.code or 0
    finally:
        leave()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    totals["start-up"] = startup
    totals["child processes (decoders, workers)"] = children.ru_utime + children.ru_stime
    with open(out, "w") as handle:
        json.dump({"code": code, "phases": totals, "process_cpu_s": time.process_time()}, handle)


if __name__ == "__main__":
    main()
