"""One sharded sink for every file format: elements -> one file (or a set of files) per shard.

Elements are keyed by their shard, every shard is added once with no element (so a shard that
gets none is still written), the keys are grouped, and each shard is written by its own worker:
no step funnels the data through one worker. What differs between formats is a
:class:`ShardWriter`: which shard an element goes to, the list of every shard, and how one
shard's elements become files. :mod:`pipelines.shards` (TFRecord) and
:mod:`pipelines.parquet_shards` (Parquet) are the two writers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam


class ShardWriter:
    """A file format's part of :class:`WriteSharded`; ``counts`` is the one value of the sink's
    counts PCollection (how many shards there are), whatever form the format gives it."""

    def shard_key(self, element, counts):
        """The shard ``element`` goes to (a hashable key)."""
        raise NotImplementedError

    def every_shard(self, counts) -> Iterable:
        """Every shard key, each once: each is written even when no element goes to it."""
        raise NotImplementedError

    def write(self, key, elements: Iterator, counts, *side) -> Iterable[str]:
        """Write shard ``key``'s ``elements`` (an iterator, in no set order) with the sink's
        side inputs ``side``; the paths written."""
        raise NotImplementedError


def _key_by_shard(element, counts, writer: ShardWriter):
    return writer.shard_key(element, counts), element


def _every_shard(counts, writer: ShardWriter):
    return [(key, None) for key in writer.every_shard(counts)]


class _WriteShardFn(beam.DoFn):
    """``(key, elements)`` -> the shard written by the writer, its paths out."""

    def __init__(self, writer: ShardWriter):
        self._writer = writer

    def process(self, keyed, counts, *side):
        key, elements = keyed
        yield from self._writer.write(key, (element for element in elements if element is not None), counts, *side)


class WriteSharded(beam.PTransform):
    """Elements -> their shards' files, written by ``writer``, one worker per shard; paths out.

    Parameters
    ----------
    writer : ShardWriter
    counts : PCollection, optional
        One value: how many shards (given to the writer as ``counts``). A subclass may compute
        it from the elements instead (:meth:`shard_counts`).
    side_inputs : sequence
        Side inputs (``AsSingleton``, ``AsList``...) handed on to ``writer.write``.
    """

    def __init__(self, writer: ShardWriter, counts=None, side_inputs=()):
        super().__init__()
        self._writer, self._counts, self._side_inputs = writer, counts, tuple(side_inputs)

    def shard_counts(self, elements):
        """The one-value PCollection of shard counts."""
        return self._counts

    def expand(self, elements):
        counts = self.shard_counts(elements)
        each = beam.pvalue.AsSingleton(counts)
        keyed = elements | "KeyByShard" >> beam.Map(_key_by_shard, each, self._writer)
        every_shard = counts | "EveryShard" >> beam.FlatMap(_every_shard, self._writer)
        return (
            (keyed, every_shard)
            | "WithEmptyShards" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShardFn(self._writer), each, *self._side_inputs)
        )
