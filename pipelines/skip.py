"""``--incremental``'s skip: which catalog tracks a model version has already tagged.

The existing run's Parquet files are read column by column with pyarrow, only ``track_id`` and
``model`` (never the scores or embeddings), into a compact lookup held once per worker process
(:class:`TaggedIds`, through Beam's ``shared.Shared``); each catalog track is then looked up
where it is read, in the same fused stage. No row of the existing run becomes a Beam element
and nothing is grouped, so on the local runner (which keeps every element that crosses a stage
in memory) the skip costs the lookup only, and on Dataflow each worker holds one lookup.

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
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils import shared
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.storage import filesystem

BATCH_ROWS = 65536  # rows read per batch: bounds the transient Python ids of a batch
LOOKUP_BATCH = 4096  # catalog tracks looked up at once


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
        at = np.minimum(self.hashes.searchsorted(keys), len(self.hashes) - 1)
        found = self.hashes[at] == keys
        hits = np.flatnonzero(found)
        if len(hits):
            same = pc.equal(self.ids.take(pyarrow.array(at[hits])), pyarrow.array([track_ids[i] for i in hits]))
            for i in hits[~same.to_numpy(zero_copy_only=False)]:  # a hash collision: the id decides
                found[i] = track_ids[i] in self
        return found


class SplitTagged(beam.DoFn):
    """A catalog track -> itself on the main output, or on ``skipped`` when the lookup has it.

    Tracks are looked up :data:`LOOKUP_BATCH` at a time (one vectorised search each); each
    skipped one also counts in the run's ``skipped`` statistic here, as the batch is split."""

    def __init__(self, files: list[str], model_version: str, count_as: tuple[str, str] | None = None):
        self._files = list(files)
        self._version = model_version
        self._count_as = count_as
        self._shared = shared.Shared()
        self._lookup = None
        self._batch: list = []

    def setup(self):
        files, version = self._files, self._version
        self._lookup = self._shared.acquire(lambda: TaggedIds(files, version), tag="\n".join([version, *files]))

    def start_bundle(self):
        self._batch = []

    def process(self, track):
        self._batch.append(track)
        if len(self._batch) >= LOOKUP_BATCH:
            yield from self._split(lambda value: value)

    def finish_bundle(self):
        # Batch (bounded) input only: the catalog's tracks are all in the global window.
        yield from self._split(lambda value: WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()]))

    def _split(self, wrap):
        batch, self._batch = self._batch, []
        if not batch:
            return
        done = self._lookup.has([track.track_id for track in batch])
        if self._count_as is not None and done.any():
            beam.metrics.Metrics.counter(*self._count_as).inc(int(done.sum()))
        for track, skip in zip(batch, done):
            yield beam.pvalue.TaggedOutput("skipped", wrap(track)) if skip else wrap(track)
