"""Pipeline stages shared by featurize and tag: decoding with its checks, and run statistics (Beam counters)."""

from __future__ import annotations

import argparse
import dataclasses

import apache_beam as beam
import numpy as np

from model import dsp
from pipelines import dead_letter, ordered_pool, tag_progress
from pipelines.catalog import Track
from pipelines.decode import audio

SILENCE_PEAK = 1e-4  # -80 dBFS: digital silence, nothing to learn or tag
DECODE_ATTEMPTS = 3


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """How tracks are decoded; the same flags in featurize and tag so both see the same audio."""

    max_duration_s: float = 600.0
    min_duration_s: float = 1.0
    timeout_s: float = 120.0
    decoder: str = "auto"
    max_bytes: int = audio.DEFAULT_MAX_BYTES

    def __post_init__(self):
        if self.max_duration_s <= 0 or self.timeout_s <= 0 or self.min_duration_s < 0:
            raise ValueError("--max-duration and --timeout must be positive, --min-duration not negative")
        if self.max_bytes < 1:
            raise ValueError("--max-bytes must be positive")
        if self.min_duration_s > self.max_duration_s:
            raise ValueError("--min-duration must not exceed --max-duration")
        if self.decoder not in audio.DECODERS:
            raise ValueError(f"unknown decoder {self.decoder!r}")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--max-duration",
            type=float,
            default=cls.max_duration_s,
            help="decode at most this many seconds of each track (%(default)s)",
        )
        parser.add_argument(
            "--min-duration",
            type=float,
            default=cls.min_duration_s,
            help="shorter tracks go to the dead letter (%(default)s)",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=cls.timeout_s,
            help="per-file decode timeout in seconds, in-process decoders included (%(default)s)",
        )
        parser.add_argument(
            "--max-bytes",
            type=int,
            default=cls.max_bytes,
            help="larger audio files go to the dead letter; "
            "gs:// audio is streamed, never read past this (%(default)s = 1 GiB)",
        )
        parser.add_argument(
            "--decoder",
            choices=audio.DECODERS,
            default=cls.decoder,
            help="auto: in-process libsndfile for wav/flac/ogg/mp3, ffmpeg otherwise and as fallback",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "DecodeOptions":
        return cls(args.max_duration, args.min_duration, args.timeout, args.decoder, args.max_bytes)


def check_audio(samples: np.ndarray, *, min_duration_s: float) -> None:
    """Reject audio with nothing in it, or with sample values no audio has
    (:func:`audio.check_samples`); :class:`audio.DecodeError` says why.

    Tracks shorter than ``min_duration_s`` are rejected; longer tracks shorter than one
    patch are zero-padded to one patch by :func:`model.dsp.patch_waveform`.
    """
    duration = len(samples) / dsp.SAMPLE_RATE
    if duration < min_duration_s:
        raise audio.DecodeError(f"too short: {duration:.2f} s < minimum {min_duration_s:g} s")
    audio.check_samples(samples)
    if np.abs(samples).max() < SILENCE_PEAK:
        raise audio.DecodeError("silent: peak amplitude below -80 dBFS")


class _DecodeFn(ordered_pool.OrderedPoolFn):
    """Decode with retries: a :class:`audio.TransientError` (an I/O hiccup, a flaky object
    store) is retried, with Beam's exponential backoff, up to ``DECODE_ATTEMPTS`` attempts in
    all; a :class:`audio.DecodeError` is final.

    With ``concurrency`` above 1, that many tracks decode at once on a thread pool (each thread
    feeds its own decode helper process, so the threads mostly wait) while this thread carries
    the decoded tracks on through the fused stages after it; outputs keep the input order.
    """

    def __init__(self, options: DecodeOptions, concurrency: int = 1):
        # Wait only when every thread has work queued.
        super().__init__(max_in_flight=2 * concurrency)
        self._options = options
        self._concurrency = concurrency

    def setup(self):
        self._ticker = tag_progress.Ticker("decode")  # tracks that fail never reach the model's progress
        if self._concurrency > 1:
            self.start_pool(self._concurrency, "decode")

    def teardown(self):
        super().teardown()
        self._ticker.finish()

    def _decode(self, track: Track):
        """``(samples or the DecodeError, attempts)``: runs on the pool, so no metrics here."""
        from apache_beam.utils import retry

        attempts = []

        @retry.with_exponential_backoff(
            num_retries=DECODE_ATTEMPTS - 1,
            initial_delay_secs=0.1,
            logger=lambda *args, **kwargs: None,  # each retry is counted; a log line per retry is noise
            retry_filter=lambda error: isinstance(error, audio.TransientError),
        )
        def attempt():
            attempts.append(1)
            return audio.decode_audio(
                track.uri,
                max_duration_s=self._options.max_duration_s,
                timeout_s=self._options.timeout_s,
                decoder=self._options.decoder,
                max_bytes=self._options.max_bytes,
            )

        try:
            samples = attempt().samples
            check_audio(samples, min_duration_s=self._options.min_duration_s)
            return samples, len(attempts)
        except audio.TransientError as error:
            return audio.DecodeError(f"gave up after {len(attempts)} attempts: {error}"), len(attempts)
        except audio.DecodeError as error:
            return error, len(attempts)

    def outputs(self, track: Track, result):
        samples, attempts = result
        self._ticker.add("failed" if isinstance(samples, audio.DecodeError) else "decoded")
        if attempts > 1:
            beam.metrics.Metrics.counter("decode", "retries").inc(attempts - 1)
        if isinstance(samples, audio.DecodeError):
            beam.metrics.Metrics.counter("decode", "failed").inc()
            record = dead_letter.record(track_id=track.track_id, uri=track.uri, stage="decode", error=str(samples))
            return [beam.pvalue.TaggedOutput(dead_letter.TAG, record)]
        beam.metrics.Metrics.counter("decode", "decoded").inc()
        return [(track, samples)]

    def process(self, track: Track):
        yield from self.submit(track, self._decode, track)


class DecodeTracks(beam.PTransform):
    """Track -> (track, 16 kHz mono samples); undecodable, too short or silent -> dead letter.

    ``concurrency``: tracks decoded at once (see :class:`_DecodeFn`); 1 decodes in the calling thread.
    """

    def __init__(self, options: DecodeOptions, concurrency: int = 1):
        super().__init__()
        self._options = options
        self._concurrency = concurrency

    def expand(self, tracks):
        decode = _DecodeFn(self._options, self._concurrency)
        return tracks | "Decode" >> beam.ParDo(decode).with_outputs(dead_letter.TAG, main="decoded")


STATS = "tagscale_stats"  # the Beam metrics namespace of a run's statistics


_COUNTERS: dict = {}  # name -> its counter (one object per name: a counter finds its container as it counts)


def _count(pair) -> tuple:
    name, number = pair
    if not isinstance(number, int):  # Beam counters are 64-bit integers
        raise TypeError(f"statistic {name!r} must be counted in integers, got {number!r}")
    counter = _COUNTERS.get(name)
    if counter is None:
        counter = _COUNTERS[name] = beam.metrics.Metrics.counter(STATS, name)
    counter.inc(number)
    return ()


class CountStats(beam.PTransform):
    """(name, integer) pairs from every stage -> Beam counters of namespace :data:`STATS`: the
    runner sums them across workers (DirectRunner and Dataflow alike) and the driver reads the
    totals from the finished run (:func:`read_stats`). Nothing is written, nothing shuffled."""

    def expand(self, pairs):
        return pairs | "Count" >> beam.FlatMap(_count)


def read_stats(result) -> dict[str, int]:
    """The totals :class:`CountStats` counted in a finished run (its ``PipelineResult``): the
    committed values (work of retried bundles counted once) where the runner gives them."""
    from apache_beam.metrics.metric import MetricsFilter

    totals: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(STATS))["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(value)
    return totals
