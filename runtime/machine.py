"""What this machine gives the process: the one count of cores every stage sizes its threads by,
the one place TensorFlow's thread pools are sized, whether oneDNN can run bfloat16 here, and the
garbage collector's settings for a process that holds TensorFlow and Beam."""

from __future__ import annotations

import contextlib
import gc
import os


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (``taskset``, a container's cpuset), not the
    machine's total, which over-counts on a shared host; at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def share_of_cores(ways: int) -> int:
    """Threads for each of ``ways`` things running at once so that together they fill
    :func:`usable_cores` without oversubscribing it: an equal share, at least 1."""
    return max(1, usable_cores() // max(1, ways))


def set_tf_threads(intra: int, inter: int | None = None) -> bool:
    """Size TensorFlow's pools in this process: ``intra`` threads per op, ``inter`` ops at once
    (``intra`` by default).

    The pools are fixed once TensorFlow's runtime has started (an earlier model or op in this
    process); then nothing changes.

    Returns
    -------
    bool
        True when ops now run on ``intra`` threads: set here, or already that many.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter or intra)
    except RuntimeError:
        return tf.config.threading.get_intra_op_parallelism_threads() == intra
    return True


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); None where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def bfloat16_unavailable() -> str | None:
    """Why oneDNN cannot run bfloat16 kernels in this process, or None when it can.

    ``--precision bfloat16`` is oneDNN's graph rewrite: with oneDNN off the run would be float32
    under another name, and where oneDNN has no bfloat16 kernel (a CPU without AVX512_BF16 or
    AMX, or ``ONEDNN_MAX_CPU_ISA`` set below them) it throws from C++, which aborts the whole
    process. Unknown flags (no ``/proc/cpuinfo``) are taken as no reason.
    """
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        return "oneDNN is off (TF_ENABLE_ONEDNN_OPTS=0) and bfloat16 is its rewrite"
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if cap and cap not in ("ALL", "DEFAULT") and not any(part in cap for part in ("BF16", "AMX", "FP16", "AVX10")):
        return f"ONEDNN_MAX_CPU_ISA={cap} keeps oneDNN from its bfloat16 kernels"
    flags = cpu_flags()
    if flags is not None and not flags & {"avx512_bf16", "amx_bf16"}:
        return "this CPU has neither AVX512_BF16 nor AMX-BF16, which oneDNN's bfloat16 kernels need"
    return None


# Generation-1 passes of the garbage collector between two full passes in a command's process
# (CPython's default is 10).
FULL_PASS_EVERY = 100


def collect_for_a_command() -> None:
    """Set the garbage collector for a command that owns its process.

    Importing TensorFlow and Beam builds a heap of millions of long-lived objects, and CPython
    walks all of them in each full pass: at its default pace, 7 passes while a run starts, 0.7
    CPU s of a one-track featurize or tag run (measured), that free almost nothing. Full passes
    now come 10x less often; young objects are collected as before. (The command's end collects
    once and freezes the heap: :func:`runtime.errors.run_command`.)
    """
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_PASS_EVERY)


@contextlib.contextmanager
def frozen_heap():
    """Leave the objects that exist now out of the garbage collector's full passes while the
    block runs (``gc.freeze``; ``gc.unfreeze`` after, so nothing stays uncollected).

    A worker holds TensorFlow's and Beam's millions of long-lived objects, and every full pass
    walks them all; reading a catalog of millions of rows triggers a few such passes per million
    rows: 0.8 of 2.4 CPU s for 1M rows, measured. Other threads of the process are affected
    alike, only in that their older objects are not scanned for the block's duration. A heap
    that is frozen already stays as it is.
    """
    if gc.get_freeze_count():  # frozen already (a command's end): leave it so
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
