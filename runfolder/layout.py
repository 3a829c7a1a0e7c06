"""The names in a tag run folder, spelled once.

    DIR/
      tags/manifest.json            the files readers read (MANIFEST), the run's provenance
      tags/run-RUNID-SSSSS-of-NNNNN.parquet            the track table (TAGS_SCHEMA)
      tags/segments-run-RUNID-SSSSS-of-NNNNN.parquet   the segments table (with --segments)
      tags/probe-RUNID.parquet      the track table ``probe apply`` writes
      dead_letter/_manifest.json, dead_letter/part-*.parquet
      summary.json

Nothing here imports Beam.
"""

from __future__ import annotations

import hashlib
import re

TAGS = "tags"  # the folder of the track table and the segments table
MANIFEST = "manifest.json"  # in TAGS: the files readers read
SEGMENTS_KEY = "segments"  # the manifest's list of segment files
PROVENANCE_KEY = "provenance"  # the manifest's record of where the scores came from
DEAD_LETTER = "dead_letter"
DEAD_LETTER_MANIFEST = "_manifest.json"
SUMMARY = "summary.json"
ENTRIES = [DEAD_LETTER, SUMMARY, TAGS]  # what a tag run publishes into its folder
COMMIT = f"{TAGS}/{MANIFEST}"  # the file a publish lands last: readers go by it
SEGMENTS_PREFIX = "segments-"
# A file a manifest may list: a plain Parquet name of its folder, no path, no dot file.
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\.parquet")


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a local path or a URL (one slash between parts)."""
    return "/".join([base.rstrip("/"), *parts]) if base.rstrip("/") else "/" + "/".join(parts)


def tags_dirs(run_dir: str) -> list[str]:
    """Where a run's ``tags/`` may be: ``run_dir`` is a run folder or its ``tags/`` itself."""
    base = run_dir.rstrip("/") or "/"
    return [join(base, TAGS), base]


def run_prefix(run_id: str) -> str:
    """How a tag run's track files start."""
    return f"run-{run_id}"


def segments_prefix(run_id: str) -> str:
    """How a run's segment files start (its track files start ``run-``)."""
    return f"{SEGMENTS_PREFIX}{run_prefix(run_id)}"


def is_segment_file(name: str) -> bool:
    """A file of the segments table, by its name (for folders written before manifests)."""
    return name.rsplit("/", 1)[-1].startswith(SEGMENTS_PREFIX)


def shard_of(track_id: str, num_shards: int) -> int:
    """The shard a track's rows go to: a stable hash (sha256 of ``"shard:" + track_id``), the
    same on every machine and run, so a reader finds a track's segment rows in one shard."""
    digest = hashlib.sha256(("shard:" + track_id).encode("utf-8", "surrogateescape")).digest()
    return int(int.from_bytes(digest[:8], "big") / 2**64 * num_shards)
