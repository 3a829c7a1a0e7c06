"""What this machine gives the process: the one count of cores every stage sizes its threads by."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (``taskset``, a container's cpuset), not the
    machine's total, which over-counts on a shared host; at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
