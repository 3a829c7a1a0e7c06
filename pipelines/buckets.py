"""The stable bucketing hash: split assignment (featurize) and shard assignment (shards).

Kept apart from the Beam stages so that the shard writers, which the dead-letter writer uses,
need not import the stages that write dead letters.
"""

from __future__ import annotations

import hashlib


def unit_hash(key: str, salt: str = "") -> float:
    """A number in [0, 1) from the sha256 of ``salt + key``: the one stable bucketing hash behind
    split assignment and shard assignment (the same on every machine and run, unlike Python's
    salted ``hash``). Different salts give independent buckets for one key."""
    digest = hashlib.sha256((salt + key).encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
