"""Demo catalog synthesis: this tree against an older one, side by side in one run.

    .venv/bin/python benchmarks/demo_synth.py --old-tree DIR [--tracks 800] [--duration 3.5] [--repeat 2]

``DIR`` is a checkout of the code to compare with (e.g. ``git worktree add /tmp/old main`` or
``git archive main | tar -x -C /tmp/old``). Each repeat runs ``tagscale demo-catalog`` (seed 0,
default workers) once per tree, alternating old and new, each as its own process started in
its tree, so machine noise hits both alike. CPU = user+sys of the process; busy = CPU / wall.

``--profile`` instead prints, for this tree in one process without threads, where a track's
CPU time goes: each part's renderer, the rest of :func:`infra.demo.synth.render_track` (mix, tone
FFT, resampling, noise) and each encoder, in ms per track.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PYTHON, REPO, measure  # noqa: E402


def side_by_side(old_tree: pathlib.Path, *, tracks: int, duration: float, repeat: int) -> dict:
    """Wall and CPU seconds of ``demo-catalog`` per tree, one row per run."""
    runs = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(repeat):
            for name, tree in (("old", old_tree), ("new", REPO)):
                out = pathlib.Path(scratch) / f"{name}{index}"
                command = [PYTHON, "-m", "infra.cli", "demo-catalog", str(out), "--tracks", str(tracks)]
                result = measure(command + ["--duration", str(duration)], env={"PYTHONPATH": str(tree)}, cwd=tree)
                runs[name].append((result["wall_s"], result["cpu_s"]))
                print(f"{name} run {index + 1}: wall {result['wall_s']:.1f} s, CPU {result['cpu_s']:.1f} s", flush=True)
    return runs


def profile(*, tracks: int, duration: float) -> None:
    """Per-part and per-encoder CPU ms per track of this tree, single-threaded."""
    import soundfile
    import threadpoolctl

    from infra.demo import catalog as demo_catalog
    from infra.demo import synth

    spent = collections.Counter()

    def timed(name, function):
        def wrapper(*args, **kwargs):
            start = time.process_time()
            result = function(*args, **kwargs)
            spent[name] += time.process_time() - start
            return result

        return wrapper

    for name, part in list(synth._PARTS.items()):
        synth._PARTS[name] = timed(f"part {name}", part)
    plans = demo_catalog.plan_catalog(n_tracks=tracks, seed=0)
    with threadpoolctl.threadpool_limits(1, user_api="blas"), tempfile.TemporaryDirectory() as scratch:
        for plan in plans:
            audio = timed("render_track", synth.render_track)(plan, duration_s=duration, seed=0)
            file_format, subtype = demo_catalog.FORMATS[plan.extension]
            path = os.path.join(scratch, plan.file_name)
            timed(f"encode {plan.extension}", soundfile.write)(
                path, audio, plan.sample_rate, subtype, None, file_format
            )
    spent["render_track"] -= sum(value for key, value in spent.items() if key.startswith("part "))
    print(f"{len(plans)} tracks x {duration:g} s, one thread, CPU ms per track (all tracks):")
    for name, seconds in spent.most_common():
        label = "rest of render_track" if name == "render_track" else name
        print(f"| {label} | {1000 * seconds / len(plans):.1f} |")
    print(f"| total | {1000 * sum(spent.values()) / len(plans):.1f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-tree", type=pathlib.Path, help="checkout of the code to compare with")
    parser.add_argument("--tracks", type=int, default=800)
    parser.add_argument("--duration", type=float, default=3.5)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="profile this tree instead (try --tracks 200)")
    args = parser.parse_args(argv)
    if args.profile:
        profile(tracks=args.tracks, duration=args.duration)
        return 0
    if args.old_tree is None:
        parser.error("--old-tree is required unless --profile")
    runs = side_by_side(args.old_tree.resolve(), tracks=args.tracks, duration=args.duration, repeat=args.repeat)
    print("| tree | run | wall s | CPU s | busy |")
    for name, rows in runs.items():
        for index, (wall, cpu) in enumerate(rows):
            print(f"| {name} | {index + 1} | {wall:.1f} | {cpu:.1f} | {cpu / wall:.2f} |")
    old_wall = [wall for wall, _ in runs["old"]]
    new_wall = [wall for wall, _ in runs["new"]]
    print(f"wall ratio old/new, run by run: {', '.join(f'{o / n:.2f}x' for o, n in zip(old_wall, new_wall))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
