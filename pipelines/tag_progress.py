"""tag's progress on stderr: tracks through the model, and their rate, every few seconds."""

from __future__ import annotations

import sys
import time

import apache_beam as beam


class Progress(beam.DoFn):
    """Count tracks through the model (a Beam counter, ``tagscale/tracks_through_model``) and
    print 'tracks done, rate' to stderr every few seconds; a track is done when its last patch
    comes out of the model. No catalog total: the driver never reads the whole catalog."""

    def __init__(self, total: int | None = None, every_s: float = 5.0):
        self._total = total
        self._every_s = every_s

    def setup(self):
        self._done = self._reported = 0
        self._counter = beam.metrics.Metrics.counter("tagscale", "tracks_through_model")
        self._start = self._last = time.monotonic()

    def _report(self):
        rate = self._done / max(time.monotonic() - self._start, 1e-9)
        of = f", of {self._total} catalog rows" if self._total else ""
        print(
            f"tagscale tag: {self._done} tracks through the model{of} ({rate:.1f} tracks/s)",
            file=sys.stderr,
            flush=True,
        )
        self._reported, self._last = self._done, time.monotonic()

    def process(self, element):
        key, _ = element
        if key.index == key.n_patches - 1:
            self._done += 1
            self._counter.inc()
            if time.monotonic() - self._last >= self._every_s:
                self._report()
        yield element

    def teardown(self):
        if self._done > self._reported:
            self._report()


class Ticker:
    """A progress line on stderr at most every ``every_s`` seconds while counts grow, for the
    stages before the model (reading the catalog, decoding), so a run whose tracks all fail
    still shows it is moving: ``tagscale: catalog: 120000 rows read, 3 bad rows (40000/s)``.
    The clock starts with the first count, so a stage over in less than ``every_s`` says nothing."""

    def __init__(self, stage: str, every_s: float = 5.0):
        self._stage, self._every_s = stage, every_s
        self._start = self._last = None
        self._printed = False
        self.counts: dict[str, int] = {}

    def add(self, name: str, amount: int = 1) -> None:
        now = time.monotonic()
        if self._start is None:
            self._start = self._last = now
        self.counts[name] = self.counts.get(name, 0) + amount
        if now - self._last >= self._every_s:
            self._report()

    def _report(self) -> None:
        rate = sum(self.counts.values()) / max(time.monotonic() - self._start, 1e-9)
        shown = ", ".join(f"{count} {name}" for name, count in self.counts.items())
        print(f"tagscale: {self._stage}: {shown} ({rate:.0f}/s)", file=sys.stderr, flush=True)
        self._printed, self._last = True, time.monotonic()

    def finish(self) -> None:
        """The last counts, when a line was printed before (a short stage stays silent)."""
        if self._printed:
            self._report()
