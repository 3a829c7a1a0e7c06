"""``tag --incremental`` at catalog scale: 100 new tracks added to a run of 1,000,000 rows.

    .venv/bin/python benchmarks/incremental_scale.py [--rows 1000000] [--new 100] [--repeats 1] [--quick]

Builds (once, under benchmarks/work/) a synthetic run of ``--rows`` tag rows of a small random
model (written by the one writer, runfolder.writer, with its manifest), ``--new`` short WAVs
(4 s, 16 kHz) and two catalogs: the new tracks alone, and the run's tracks plus the new ones.
Then measures whole ``tagscale tag`` processes (CPU s of the process and its children, wall s,
peak RSS from wait4):

- ``fresh``: the new tracks' catalog into an empty output (the baseline);
- ``incremental, new tracks' catalog``: the same catalog ``--incremental`` into a copy of the
  big run: what the existing run costs (the skip's lookup, the driver's one-model check, the
  kept files carried over) with no catalog of 1M rows to read;
- ``incremental, full catalog``: the run's tracks plus the new ones ``--incremental`` into a
  copy of the big run: the case a user has (its 1M catalog rows read, and dropped as they are).

The overhead of the last over ``fresh`` is the figure of the target (<= 3 s, <= 300 MB); the
middle row splits it into the existing run's part and the catalog's part. Two probes split the
catalog's part further: a Beam pipeline that only reads the full catalog and counts its tracks,
and the same with the skip between (``--probe``, each a process of its own): their difference
is what the skip costs per catalog row. The table goes to BENCHMARKS.md (``incremental_scale``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import wave

import numpy as np
from common import PYTHON, REPO, WORK, cpu_info, update_benchmarks_md
from tag_throughput import run

N_FILES = 8  # shards of the synthetic run
DIM = 16  # embedding values per row (a real model's are more; the skip reads none of them)


def small_model(root) -> str:
    """The tests' small random model (3 tags), saved once under ``root``."""
    path = root / "small"
    if not (path / "tags.txt").exists():
        sys.path.insert(0, str(REPO))
        from tests.made import small_model_dir

        small_model_dir(root)
    return str(path)


def write_run(folder, rows: int, model: dict, tags: list[str]) -> None:
    """``rows`` tag rows of ``model`` in N_FILES shards plus the manifest (ids ``old-{i:08d}``)."""
    from runfolder import manifest, schema, writer

    rng = np.random.default_rng(0)
    tags_dir = folder / "tags"
    tags_dir.mkdir(parents=True, exist_ok=True)
    names = []
    per_file = -(-rows // N_FILES)
    for index in range(N_FILES):
        name = f"run-1-{index:05d}-of-{N_FILES:05d}.parquet"
        start, stop = index * per_file, min(rows, (index + 1) * per_file)
        scores = rng.random((stop - start, len(tags)))
        embeddings = rng.normal(size=(stop - start, DIM))
        writer.write_file(
            str(tags_dir / name),
            (
                schema.tag_row(
                    track_id=f"old-{i:08d}",
                    uri=f"/audio/old-{i:08d}.wav",
                    model_name=model["name"],
                    model_version=model["version"],
                    duration_s=4.0,
                    n_patches=1,
                    tags=tags,
                    scores=scores[i - start],
                    embedding=embeddings[i - start],
                )
                for i in range(start, stop)
            ),
        )
        names.append(name)
    manifest.write_tags_manifest(str(tags_dir), names, run_id="1")
    from pipelines.storage import ownership

    ownership.mark(str(folder))  # as a tag run leaves it: tagscale's own folders
    ownership.mark(str(tags_dir))


def write_wavs(folder, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rate, seconds = 16000, 4.0
    t = np.arange(int(rate * seconds)) / rate
    paths = []
    for i in range(count):
        tone = 0.4 * np.sin(2 * np.pi * (110 * 2 ** (i % 24 / 12)) * t) + 0.02 * rng.normal(size=t.size)
        path = folder / f"new{i:04d}.wav"
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes((np.clip(tone, -1, 1) * 32767).astype("<i2").tobytes())
        paths.append(str(path))
    return paths


def prepare(rows: int, new: int) -> dict:
    root = WORK / f"incremental_{rows}_{new}"
    ready = root / "ready"
    model = small_model(WORK / "incremental_model")
    if not ready.exists():
        sys.path.insert(0, str(REPO))
        from model import export

        tags, info = export.read_model_info(model)
        shutil.rmtree(root, ignore_errors=True)
        write_run(root / "run", rows, {"name": info.get("name", "model"), "version": info["version"]}, tags)
        wavs = write_wavs(root / "audio", new)
        new_lines = [f"new{i:04d},{path}" for i, path in enumerate(wavs)]
        (root / "new.csv").write_text("track_id,uri\n" + "\n".join(new_lines) + "\n")
        with open(root / "full.csv", "w") as out:
            out.write("track_id,uri\n")
            for start in range(0, rows, 100_000):
                out.writelines(
                    f"old-{i:08d},/audio/old-{i:08d}.wav\n" for i in range(start, min(rows, start + 100_000))
                )
            out.write("\n".join(new_lines) + "\n")
        ready.write_text("ok\n")
    return {"root": root, "model": model}


def probe(kind: str, catalog: str, model: str, run_dir: str) -> int:
    """In this process: read ``catalog`` (and, for ``skip``, split it by the run's ids) and count."""
    import apache_beam as beam

    from model import export
    from pipelines import skip
    from pipelines.catalog import ReadCatalog
    from runfolder import manifest

    _, info = export.read_model_info(model)
    already = skip.AlreadyTagged(manifest.tag_files(run_dir + "/tags"), info["version"]) if kind == "skip" else None
    with beam.Pipeline() as pipeline:
        tracks = (pipeline | ReadCatalog(catalog, skip=already))["tracks"]
        _ = tracks | beam.combiners.Count.Globally() | beam.Map(print)
    return 0


def measure_probes(setup: dict, env: dict) -> dict:
    results = {}
    for kind in ("catalog", "skip"):
        argv = [PYTHON, __file__, "--probe", kind, str(setup["root"] / "full.csv"), setup["model"]]
        results[kind] = run([*argv, str(setup["root"] / "run")], env)
        print(kind, {k: round(v, 2) for k, v in results[kind].items() if k != "stdout"}, flush=True)
    return results


def measure(setup: dict, repeats: int, env: dict) -> dict:
    root, model = setup["root"], setup["model"]
    out = WORK / "incremental_out"
    cases = {
        "fresh, new tracks' catalog": (root / "new.csv", False),
        "incremental, new tracks' catalog": (root / "new.csv", True),
        "incremental, full catalog": (root / "full.csv", True),
    }
    results = {}
    for name, (catalog, incremental) in cases.items():
        runs = []
        for _ in range(repeats):
            shutil.rmtree(out, ignore_errors=True)
            if incremental:
                shutil.copytree(root / "run", out)
            argv = ["tag", "--catalog", str(catalog), "--model", model, "--output", str(out)]
            result = run([PYTHON, "-m", "infra.cli", *argv, *(["--incremental"] if incremental else [])], env)
            if "tagged" not in result["stdout"]:
                raise RuntimeError(f"{name}: no summary line in {result['stdout'][-500:]!r}")
            runs.append(result)
            print(
                name, {k: round(v, 2) for k, v in result.items() if k != "stdout"}, result["stdout"].strip(), flush=True
            )
        results[name] = {key: statistics.median(r[key] for r in runs) for key in ("cpu_s", "wall_s", "rss_mb")}
    shutil.rmtree(out, ignore_errors=True)
    return results


def report(results: dict, probes: dict, rows: int, new: int, repeats: int, load: tuple) -> list[str]:
    base = results["fresh, new tracks' catalog"]
    lines = [
        "### `tag --incremental` at catalog scale (`benchmarks/incremental_scale.py`)",
        "",
        f"CPU: {cpu_info()}; load average at the start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}.",
        "",
        f"{new} new tracks (4-s WAVs) added to a synthetic run of {rows:,} rows of a small model; whole "
        f"`tagscale tag` processes (CPU s with children, wall s, peak RSS from wait4), median of {repeats}. "
        "Overhead: over the fresh run. Target: the full-catalog overhead <= 3 s and <= 300 MB.",
        "",
        "| run | CPU s | wall s | peak MB | CPU overhead | wall overhead | peak overhead |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['cpu_s']:.1f} | {r['wall_s']:.1f} | {r['rss_mb']:.0f} | "
            f"{r['cpu_s'] - base['cpu_s']:+.1f} | {r['wall_s'] - base['wall_s']:+.1f} | "
            f"{r['rss_mb'] - base['rss_mb']:+.0f} |"
        )
    part = results["incremental, new tracks' catalog"]
    full = results["incremental, full catalog"]
    lines += [
        "",
        f"Where the full-catalog overhead goes: the existing run (lookup, one-model check, kept files) "
        f"{part['wall_s'] - base['wall_s']:+.1f} wall s / {part['cpu_s'] - base['cpu_s']:+.1f} CPU s; "
        f"reading and skipping the {rows:,} catalog rows {full['wall_s'] - part['wall_s']:+.1f} wall s / "
        f"{full['cpu_s'] - part['cpu_s']:+.1f} CPU s.",
        "",
        f"The catalog's part in two probe pipelines (one process each, Beam only, no model): reading the "
        f"{rows + new:,}-row catalog and counting its tracks (every row a track element), and the same with "
        "the skip, which drops the run's rows as they are read (only the new ones become elements).",
        "",
        "| probe | CPU s | wall s | peak MB |",
        "|---|---:|---:|---:|",
    ]
    for name, r in probes.items():
        lines.append(f"| {name} | {r['cpu_s']:.1f} | {r['wall_s']:.1f} | {r['rss_mb']:.0f} |")
    skip, read = probes["skip"], probes["catalog"]
    lines += [
        "",
        f"Skip against read-everything (the lookup of {rows:,} ids and {rows + new:,} rows looked up, less "
        f"the track elements the skipped rows no longer become): {skip['cpu_s'] - read['cpu_s']:+.1f} CPU s, "
        f"{skip['wall_s'] - read['wall_s']:+.1f} wall s, {skip['rss_mb'] - read['rss_mb']:+.0f} MB.",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the existing run (%(default)s)")
    parser.add_argument("--new", type=int, default=100, help="new tracks (%(default)s)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print the table only (not BENCHMARKS.md)")
    parser.add_argument("--quick", action="store_true", help="a run of 100,000 rows (a smoke run)")
    parser.add_argument("--probe", nargs=4, metavar=("KIND", "CATALOG", "MODEL", "RUN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        return probe(*args.probe)
    if args.quick:
        args.rows = min(args.rows, 100_000)
    setup = prepare(args.rows, args.new)
    env = {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    load = os.getloadavg()
    results = measure(setup, args.repeats, env)
    lines = report(results, measure_probes(setup, env), args.rows, args.new, args.repeats, load)
    print("\n".join(lines))
    if not args.no_write:
        update_benchmarks_md("incremental_scale", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
