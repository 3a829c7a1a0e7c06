"""runtime.machine: the one core count (CPU affinity, not the machine's total) and the one TF thread
split, and the stages that size their threads by them (comparison lanes, the explorer's ranking)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 usable cores"
)

# Pinned to one core, on a machine with more: every count must say 1, where os.cpu_count() says all.
PINNED = """
import concurrent.futures, json, os, pathlib, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from runtime import machine
from trainer import lanes
sys.path.insert(0, "tests")
from explore_run import write_run
from infra.explore import data as explore_data

pools = []
real = concurrent.futures.ThreadPoolExecutor
def recording(max_workers=None, *args, **kwargs):
    pools.append(max_workers)
    return real(max_workers, *args, **kwargs)
concurrent.futures.ThreadPoolExecutor = recording
root = pathlib.Path(sys.argv[1])
write_run(root, tracks=8)
run = explore_data.read_run(0, str(root))
print(json.dumps({
    "cpu_count": os.cpu_count(),
    "usable_cores": machine.usable_cores(),
    "share_of_2": machine.share_of_cores(2),
    "lane_threads": lanes.threads_per_job(1),
    "explore_pools": pools,
    "rows": run.table.num_rows,
}))
"""


def pinned_counts(tmp_path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PINNED, str(tmp_path / "run")],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.splitlines()[-1])


def test_one_core_of_affinity_is_one_core_everywhere(tmp_path):
    counts = pinned_counts(tmp_path)
    assert counts["cpu_count"] >= 2  # the machine has more: a count by os.cpu_count() would differ
    assert counts["usable_cores"] == 1
    assert counts["share_of_2"] == 1  # never 0 threads
    assert counts["lane_threads"] == 1
    assert counts["rows"] == 8 and counts["explore_pools"] == [1]


def test_usable_cores_is_the_affinity_here():
    from runtime import machine

    assert machine.usable_cores() == len(os.sched_getaffinity(0))
    assert machine.share_of_cores(1) == machine.usable_cores()
    assert machine.share_of_cores(machine.usable_cores() + 1) == 1


FROZEN = """
import gc, weakref
from runtime.machine import frozen_heap

class Node:
    pass

def cycle():
    node = Node()
    node.self = node  # garbage as soon as the name goes: only a full pass frees it
    return weakref.ref(node)

made_before = cycle()
with frozen_heap():
    assert gc.get_freeze_count() > 0
    gc.collect()
    assert made_before() is not None, "a frozen cycle was collected"
    made_inside = cycle()
    gc.collect()
    assert made_inside() is None, "a cycle made inside the block was not collected"
assert gc.get_freeze_count() == 0
gc.collect()
assert made_before() is None, "the cycle was not collected after the block"
gc.freeze()  # as a command's end does: then a block leaves the heap frozen
with frozen_heap():
    pass
assert gc.get_freeze_count() > 0
print("ok")
"""


def test_the_heap_is_frozen_while_a_catalog_is_read_and_thawed_after():
    """The objects alive when the block starts sit out the collector's passes for its duration
    only (collected after it), while cycles made inside are collected as usual; a heap frozen
    before the block (a command's end freezes it) stays frozen."""
    result = subprocess.run(
        [sys.executable, "-c", FROZEN], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO}
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
