"""A DoFn whose work runs on a thread pool while its outputs keep the input order.

Decoding (threads that wait on helper processes) and model calls (TensorFlow releases the GIL)
both overlap with the fused stages around them this way. The calling thread submits work,
hands on the results of the oldest submissions as soon as they are done, and waits only when
more than ``max_in_flight`` are pending (that bounds the memory the results hold). What is
still pending when the bundle ends comes out of ``finish_bundle``, in the global window.
"""

from __future__ import annotations

import collections
import concurrent.futures

import apache_beam as beam
from apache_beam.transforms import window


class OrderedPoolFn(beam.DoFn):
    """Base DoFn: :meth:`submit` work, get :meth:`outputs` of its result back in submission order.

    A subclass starts the pool with :meth:`start_pool` in ``setup`` (no pool: work runs in the
    calling thread), calls ``yield from self.submit(context, fn, *args)`` (or, when it submits
    nothing, ``yield from self.ready()``) from ``process`` and defines :meth:`outputs`.
    """

    def __init__(self, max_in_flight: int):
        self._max_in_flight = max_in_flight
        self._pool = None
        self._pending = collections.deque()

    def start_pool(self, workers: int, thread_name_prefix: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix=thread_name_prefix)

    def outputs(self, context, result) -> list:
        """What one submission hands on, given what it was submitted with and its result; runs in
        the DoFn's own thread (metrics belong here, not in the work)."""
        raise NotImplementedError

    def start_bundle(self):
        self._pending = collections.deque()

    def submit(self, context, fn, *args):
        """Run ``fn(*args)`` (on the pool, if any); yield every output that is ready, in order."""
        if self._pool is None and not self._pending:
            yield from self.outputs(context, fn(*args))
            return
        self.enqueue(context, fn, *args)
        yield from self.ready()

    def enqueue(self, context, fn, *args) -> None:
        """Start ``fn(*args)`` (in this thread when there is no pool); its outputs come later."""
        if self._pool is not None:
            future = self._pool.submit(fn, *args)
        else:
            future = concurrent.futures.Future()
            future.set_result(fn(*args))
        self._pending.append((context, future))

    def flush(self) -> None:
        """Called as the bundle ends, before what is pending is drained: :meth:`enqueue` what is
        held back (a partial batch)."""

    def ready(self, *, drain: bool = False):
        """Outputs of the oldest finished submissions; waits while too many are in flight."""
        while self._pending and (drain or self._pending[0][1].done() or len(self._pending) > self._max_in_flight):
            context, future = self._pending.popleft()
            yield from self.outputs(context, future.result())

    def finish_bundle(self):
        self.flush()
        for output in self.ready(drain=True):
            if isinstance(output, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(output.tag, window.GlobalWindows.windowed_value(output.value))
            else:
                yield window.GlobalWindows.windowed_value(output)

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
