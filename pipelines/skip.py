"""``--incremental``'s skip: which catalog tracks a model version has already tagged.

The existing run's Parquet files are read column by column with pyarrow, only ``track_id`` and
``model`` (never the scores or embeddings), into a compact lookup held once per worker process
(:class:`TaggedIds`, through Beam's ``shared.Shared``). The catalog reader looks its rows up in
blocks as it reads them (:class:`AlreadyTagged`), before checking them: no row of the existing
run and no skipped catalog row becomes a Beam element, and nothing is grouped, so a rerun over
a catalog of millions of rows costs about what reading its lines costs.

The lookup: the 64-bit hashes of the ids, sorted (numpy), and the ids themselves in the same
order in one Arrow string array, to confirm a hash hit exactly (no false skip on a hash
collision). About 12 bytes plus the id's length per row: ~25 MB for 1M ids of 13 characters,
~250 MB for 10M, per worker process.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.utils import shared

from pipelines.storage import filesystem

BATCH_ROWS = 65536  # rows read per batch: bounds the transient Python ids of a batch
LOOKUP_BATCH = 4096  # catalog rows looked up at once


def _hashes(ids: list[str]) -> np.ndarray:
    """64-bit hashes of ``ids``: Python's string hash, the same within one process (the lookup is
    built and queried in the process that holds it, so the per-process hash seed does not matter)."""
    return np.fromiter(map(hash, ids), dtype=np.int64, count=len(ids))


class TaggedIds:
    """The track ids that one model version has rows for in some tag Parquet files."""

    def __init__(self, files: list[str], model_version: str):
        hashes, chunks = [], []
        for path in files:
            fs, inner = filesystem.resolve(path)
            parquet = pq.ParquetFile(inner, filesystem=fs)
            for batch in parquet.iter_batches(columns=["track_id", "model"], batch_size=BATCH_ROWS):
                ids = batch.column(0)
                same = pc.fill_null(pc.equal(batch.column(1).field("version"), model_version), False)
                ids = pc.drop_null(ids.filter(same))
                if len(ids):
                    hashes.append(_hashes(ids.to_pylist()))
                    chunks.append(ids)
        self.hashes = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.int64)
        order = np.argsort(self.hashes, kind="stable")
        self.hashes = self.hashes[order]
        ids = (
            pyarrow.chunked_array(chunks, pyarrow.string()).combine_chunks()
            if chunks
            else pyarrow.array([], pyarrow.string())
        )
        self.ids = ids.take(pyarrow.array(order))

    def __len__(self) -> int:
        return len(self.hashes)

    def __contains__(self, track_id: str) -> bool:
        key = hash(track_id)
        at = int(self.hashes.searchsorted(key))
        while at < len(self.hashes) and self.hashes[at] == key:
            if self.ids[at].as_py() == track_id:
                return True
            at += 1
        return False

    def has(self, track_ids: list[str]) -> np.ndarray:
        """Per id of ``track_ids``, whether it is in the lookup: one vectorised search, each hit
        confirmed against the id itself (exact)."""
        if not len(self.hashes):
            return np.zeros(len(track_ids), dtype=bool)
        keys = _hashes(track_ids)
        # Searched in key order: each search then starts where the last one ended (numpy does so
        # for sorted keys), 4x faster than random probes into a lookup of millions.
        order = np.argsort(keys)
        at = np.empty(len(keys), dtype=np.intp)
        at[order] = self.hashes.searchsorted(keys[order])
        at = np.minimum(at, len(self.hashes) - 1)
        found = self.hashes[at] == keys
        hits = np.flatnonzero(found)
        if len(hits):
            same = pc.equal(self.ids.take(pyarrow.array(at[hits])), pyarrow.array([track_ids[i] for i in hits]))
            for i in hits[~same.to_numpy(zero_copy_only=False)]:  # a hash collision: the id decides
                found[i] = track_ids[i] in self
        return found


class AlreadyTagged:
    """What ``--incremental`` skips: the track ids one model version has rows for in ``files``.

    Given to :class:`pipelines.catalog.ReadCatalog`, which looks each block of rows up as it
    reads them, by the row's own track_id (stripped, as the catalog check spells it), before
    the row is checked further: an already tagged row never becomes a track, a chunk or any
    other Beam element. Picklable; the lookup (:class:`TaggedIds`) is built once per worker
    process, on first use.
    """

    def __init__(self, files: list[str], model_version: str):
        self.files = list(files)
        self.model_version = model_version
        self._shared = shared.Shared()

    def lookup(self) -> TaggedIds:
        files, version = self.files, self.model_version
        return self._shared.acquire(lambda: TaggedIds(files, version), tag="\n".join([version, *files]))


def raw_id(record) -> str:
    """A catalog row's track_id as the catalog check would spell it (text, stripped), or "" where
    the row has none of a usable type: no tagged track has an empty id, so such a row is kept
    (and then checked, and dead-lettered, as usual)."""
    value = record.get("track_id") if isinstance(record, dict) else None
    if type(value) is str:  # a CSV row's, and most others': the common case first
        return value.strip()
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return ""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value.strip() if isinstance(value, str) else ""


def split_block(lookup: TaggedIds, block: list):
    """``(row_number, record)`` pairs -> a ``skipped`` output of how many the lookup has, then
    the pairs it lacks."""
    if not block:
        return
    done = lookup.has([raw_id(record) for _, record in block]).tolist()
    kept = [item for item, skip in zip(block, done) if not skip]
    yield beam.pvalue.TaggedOutput("skipped", len(block) - len(kept))
    yield from kept


def untagged_rows(rows, already: AlreadyTagged):
    """Catalog ``(row_number, record)`` pairs without those ``already`` has, looked up a block
    at a time; each block's count of dropped rows as a ``skipped`` output, before its rows."""
    lookup, block = already.lookup(), []
    for item in rows:
        block.append(item)
        if len(block) == LOOKUP_BATCH:
            yield from split_block(lookup, block)
            block = []
    yield from split_block(lookup, block)
