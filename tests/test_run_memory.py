"""A gs:// run is scanned, not loaded: query's memory does not grow with the run, and the explorer
reads a gs:// run through the same reader as a local one (no copy to disk, the same memory)."""

import json
import os
import subprocess
import sys

import pytest
from big_runs import write_big_run
from gcs_emulator import running_emulator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "tagscale-memory"
# Runs the command's code in a fresh process and reports its peak resident memory on stderr.
MEASURE = """
import json, resource, sys
what, run = sys.argv[1:]
if what == "query":
    import io, contextlib
    from tagruns import query
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        query.main(["--tags", run, "--json", "stats"])
    answer = {row["tag"]: row["tracks"] for row in json.loads(out.getvalue())}
else:
    from infra.explore.query import Explorer
    explorer = Explorer.open([run])
    answer = explorer.stats()["tracks"]
import os, tempfile
on_disk = os.listdir(tempfile.gettempdir())  # while the run is open: what it put on local disk
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"answer": answer, "peak_mb": peak, "on_disk": on_disk}))
"""


def measure(what: str, run: str, tmp_dir) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]), "TMPDIR": tmp_dir}
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, what, run], capture_output=True, text=True, env=env, timeout=600, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("big")
    local = {size: write_big_run(root / f"run{size}", size) for size in (50, 200)}
    with running_emulator(BUCKET) as client:
        bucket = client.bucket(BUCKET)
        for size, folder in local.items():
            for name in os.listdir(os.path.join(folder, "tags")):
                bucket.blob(f"run{size}/tags/{name}").upload_from_filename(os.path.join(folder, "tags", name))
        yield {"local": local, "gs": {size: f"gs://{BUCKET}/run{size}" for size in local}, "tmp": str(root)}


@pytest.mark.slow  # two runs of 50 and 200 MB written, uploaded and queried (about a minute)
def test_query_stats_over_a_gcs_run_uses_memory_that_does_not_grow_with_the_run(runs, tmp_path):
    small, big = (measure("query", runs["gs"][size], str(tmp_path)) for size in (50, 200))
    print("query stats peak MB, gs:// 50 / 200 MB runs:", small["peak_mb"], big["peak_mb"])
    assert set(small["answer"].values()) == {48099} and set(big["answer"].values()) == {192399}
    # Measured 496 and 496 MB (local runs: 496 and 521 MB); before, the gs:// run was read whole.
    assert big["peak_mb"] <= 1.15 * small["peak_mb"], (small, big)
    assert small["on_disk"] == big["on_disk"] == []


@pytest.mark.slow
def test_the_explorer_reads_a_gcs_run_in_place_in_the_memory_of_a_local_read(runs, tmp_path):
    local = measure("explore", runs["local"][50], str(tmp_path))
    remote = measure("explore", runs["gs"][50], str(tmp_path))
    print("explorer peak MB, local / gs://:", local["peak_mb"], remote["peak_mb"])
    assert local["answer"] == remote["answer"] == 48099
    assert remote["peak_mb"] <= 1.1 * local["peak_mb"], (local, remote)
    assert remote["on_disk"] == []  # nothing copied to local disk
