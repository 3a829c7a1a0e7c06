"""The ordered thread-pool DoFn under decoding and inference: outputs in input order, a bounded
number of results in flight, what is left at the bundle's end windowed."""

from __future__ import annotations

import threading
import time

from apache_beam.pvalue import TaggedOutput
from apache_beam.utils.windowed_value import WindowedValue

from pipelines import ordered_pool


class Slow(ordered_pool.OrderedPoolFn):
    """``n`` -> ``n * 10`` after ``sleeps[n]`` seconds; odd numbers to a tagged output."""

    def __init__(self, workers, max_in_flight, sleeps):
        super().__init__(max_in_flight)
        self._workers, self._sleeps = workers, sleeps
        self.running = self.most_running = 0
        self._lock = threading.Lock()

    def setup(self):
        if self._workers > 1:
            self.start_pool(self._workers, "test")

    def work(self, n):
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        time.sleep(self._sleeps[n])
        with self._lock:
            self.running -= 1
        return n * 10

    def outputs(self, n, result):
        self.pending_seen = max(getattr(self, "pending_seen", 0), len(self._pending))
        return [TaggedOutput("odd", result)] if n % 2 else [result]

    def process(self, n):
        yield from self.submit(n, self.work, n)


def run_bundle(fn, inputs):
    fn.setup()
    fn.start_bundle()
    out = [o for n in inputs for o in fn.process(n)]
    finished = list(fn.finish_bundle())
    fn.teardown()
    assert all(isinstance(o.value if isinstance(o, TaggedOutput) else o, WindowedValue) for o in finished)
    out += [TaggedOutput(o.tag, o.value.value) if isinstance(o, TaggedOutput) else o.value for o in finished]
    return [("odd", o.value) if isinstance(o, TaggedOutput) else o for o in out], len(finished)


def test_outputs_keep_the_input_order_when_later_work_finishes_first():
    sleeps = [0.2, 0.0, 0.15, 0.0, 0.1, 0.0, 0.0, 0.05]
    want = [("odd", n * 10) if n % 2 else n * 10 for n in range(8)]
    inline, left = run_bundle(Slow(1, 2, sleeps), range(8))
    assert inline == want and left == 0  # no pool: each output as its input comes
    pooled = Slow(3, 4, sleeps)
    assert run_bundle(pooled, range(8))[0] == want
    assert pooled.most_running == 3  # the pool did overlap the work


def test_waits_when_more_than_max_in_flight_are_pending():
    fn = Slow(4, 2, [0.05] * 12)
    outputs, _ = run_bundle(fn, range(12))
    assert len(outputs) == 12 and fn.pending_seen <= 2  # popped at most 2 behind the head
