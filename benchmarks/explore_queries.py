"""Explorer query latency on a synthetic 1M-track run (50 tags, 200-float embeddings).

    python benchmarks/explore_queries.py [--tracks 1000000] [--repeats 5] [--no-write]

Writes the run once under benchmarks/work/, starts the real server on 127.0.0.1 and times each
API call over HTTP (JSON encoding included): median and worst of ``--repeats`` calls. Also times
DuckDB straight over the Parquet for the same top-20 query, the design the server does not use.
Updates the "Explorer queries" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import WORK, update_benchmarks_md  # noqa: E402

TAGS = 50  # the MagnaTagATune vocabulary size musicnn-mtt tags with
EMBEDDING = 200  # musicnn's embedding width
CHUNK = 100_000


def synthetic_run(tracks: int, root) -> str:
    """``root/tags/*.parquet`` with ``tracks`` rows of the tag schema (skewed scores, sorted per row)."""
    import pyarrow
    import pyarrow.parquet as pq

    from runfolder.schema import TAGS_SCHEMA

    tags_dir = root / "tags"
    done = root / "done"
    if done.exists():
        return str(root)
    tags_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    vocabulary = pyarrow.array([f"tag{k:02d}" for k in range(TAGS)])
    entry_fields = list(TAGS_SCHEMA.field("scores").type.value_type)
    for part, start in enumerate(range(0, tracks, CHUNK)):
        n = min(CHUNK, tracks - start)
        scores = rng.beta(0.6, 3.0, size=(n, TAGS)).astype(np.float32)  # most scores low, a long tail up to 1
        order = np.argsort(-scores, axis=1)
        entries = pyarrow.StructArray.from_arrays(
            [
                vocabulary.take(pyarrow.array(order.ravel())),
                pyarrow.array(np.take_along_axis(scores, order, 1).ravel()),
            ],
            fields=entry_fields,
        )
        offsets = pyarrow.array(np.arange(0, n * TAGS + 1, TAGS, dtype=np.int32))
        ids = [f"trk{i:07d}" for i in range(start, start + n)]
        table = pyarrow.Table.from_arrays(
            [
                pyarrow.array(ids),
                pyarrow.array([f"/catalog/audio/{i}.mp3" for i in ids]),
                pyarrow.StructArray.from_arrays(
                    [pyarrow.array(["musicnn-mtt"] * n), pyarrow.array(["1"] * n)], names=["name", "version"]
                ),
                pyarrow.array(rng.uniform(20, 400, n)),
                pyarrow.array(np.full(n, 10, np.int32)),
                pyarrow.ListArray.from_arrays(offsets, entries),
                pyarrow.ListArray.from_arrays(
                    pyarrow.array(np.arange(0, n * EMBEDDING + 1, EMBEDDING, dtype=np.int32)),
                    pyarrow.array(rng.normal(size=n * EMBEDDING).astype(np.float32)),
                ),
            ],
            schema=TAGS_SCHEMA,
        )
        pq.write_table(table, tags_dir / f"run-{part:05d}.parquet")
    done.write_text("ok")
    return str(root)


def timed(url: str, repeats: int) -> dict:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        with urllib.request.urlopen(url, timeout=600) as response:
            body = response.read()
        seconds.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(seconds),
        "max_s": max(seconds),
        "first_s": seconds[0],
        "bytes": len(body),
        "body": body,
    }


def direct_parquet_seconds(run_dir: str) -> float:
    """The same top-20 query with DuckDB unnesting the Parquet on every call."""
    import duckdb

    start = time.perf_counter()
    duckdb.connect().execute(
        "SELECT track_id, s.score FROM (SELECT track_id, unnest(scores) AS s "
        f"FROM read_parquet('{run_dir}/tags/*.parquet')) "
        "WHERE s.tag = 'tag07' AND s.score >= 0.5 ORDER BY s.score DESC LIMIT 20"
    ).fetchall()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)

    from infra.explore.query import Explorer
    from infra.explore.server import ExplorerServer

    root = WORK / f"explore_{args.tracks}"
    start = time.perf_counter()
    run_dir = synthetic_run(args.tracks, root)
    print(f"synthetic run: {run_dir} ({time.perf_counter() - start:.0f} s)", flush=True)
    start = time.perf_counter()
    explorer = Explorer.open([run_dir])
    load_s = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    server = ExplorerServer(explorer, "127.0.0.1", 0, quiet=True)
    server.start()
    base = server.url.rstrip("/")
    middle = f"trk{args.tracks // 2:07d}"
    queries = [
        ("tracks: top 20 of a tag above 0.5", "/api/tracks?tag=tag07&min=0.5&limit=20&offset=0"),
        (
            f"tracks: a page deep in the list (offset {args.tracks // 2:,}, min 0)",
            f"/api/tracks?tag=tag07&min=0&limit=20&offset={args.tracks // 2}",
        ),
        ("tracks: tag + search on id/uri", "/api/tracks?tag=tag07&min=0.2&q=trk00123&limit=20"),
        ("tracks: no tag (run order), middle page", f"/api/tracks?limit=20&offset={args.tracks // 2}"),
        ("tags (the tag list)", "/api/tags"),
        ("stats (computed at startup)", "/api/stats"),
        ("track: every score + metadata", f"/api/tracks/{middle}"),
        ("CSV export of a tag above 0.9, streamed", "/api/tracks.csv?tag=tag07&min=0.9"),
        ("similar tracks (tagruns.similar)", f"/api/tracks/{middle}/similar"),
    ]
    results = []
    for label, path in queries:
        # similar reads the whole run's embeddings per call: time it once, it is not a browse query
        result = timed(base + path, 1 if path.endswith("/similar") else args.repeats)
        if path.startswith("/api/tracks?"):
            result["total"] = json.loads(result["body"])["total"]
        results.append((label, path, result))
        print(
            f"{label:58s} median {result['median_s']:.3f} s  max {result['max_s']:.3f} s  "
            f"first {result['first_s']:.3f} s",
            flush=True,
        )
    direct_s = direct_parquet_seconds(run_dir)
    print(f"DuckDB straight over the Parquet (same top 20): {direct_s:.2f} s", flush=True)
    server.stop()
    explorer.close()

    rows = "\n".join(
        f"| {label} | `{path}` | {r['median_s'] * 1000:.0f} | {r['max_s'] * 1000:.0f} | {r['first_s'] * 1000:.0f} |"
        for label, path, r in results
    )
    body = (
        f"""### Explorer queries

`python benchmarks/explore_queries.py`: a synthetic run of {args.tracks:,} tracks x {TAGS} tags with {EMBEDDING}-float
embeddings ({len(list((root / "tags").glob("*.parquet")))} Parquet files of {CHUNK:,} rows), """
        f"""served by `tagscale explore` on 127.0.0.1 and
queried over HTTP, {args.repeats} calls each (milliseconds; JSON encoding included). """
        f"""{platform.machine()}, {os.cpu_count()} cores
shared with other jobs while measured, so single numbers are noisy.

| query | request | median ms | max ms | first ms |
|---|---|---:|---:|---:|
{rows}

Startup reads the run into one score column and one rank column per tag and computes the summary: """
        f"""{load_s:.1f} s, peak RSS {rss_mb:,.0f} MB. DuckDB straight over
the Parquet (`unnest(scores)` on every request) takes {direct_s:.1f} s for the query of the table's first row, """
        """which is why
the server does not query the Parquet per request. Similar tracks is `tagruns.similar`'s own time (it reads the
embeddings of the whole run on each call), timed once; it is not one of the browse queries, and the
Track page loads it after the rest of the page.
"""
    )
    print(body)
    if not args.no_write:
        update_benchmarks_md("explore-queries", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
