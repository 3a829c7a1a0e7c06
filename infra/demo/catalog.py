"""The demo catalog: synthesized music-like tracks whose tags can be heard in the audio.

``tagscale demo-catalog DIR --tracks N`` writes ``DIR/audio/demo-00000.wav`` ... and
``DIR/catalog.csv`` (``track_id,uri,tags``; tags ``;``-separated, uri an absolute path). It is
the embedded data of ``make demo``, the end-to-end tests and the front-end comparison.

Each track draws one value on six independent dimensions, so a multi-label model has
several unrelated things to learn: which one or two lead instruments play (``piano``,
``strings``, ``flute``, ``guitar``), ``drums`` or none, ``fast`` or ``slow`` tempo, a
``bass`` line or none, ``bright``, ``dark`` or neutral tone, ``vocals`` or none.
:data:`TAG_SOUNDS` says what each tag sounds like. Values are dealt out balanced (every
value of a dimension on an equal share of tracks, within one) in an order shuffled by the
seed, so even a 12-track catalog holds every tag; each instrument is on 40% of tracks,
``drums``, ``bass``, ``fast`` and ``slow`` on 50%, ``bright``, ``dark`` and ``vocals`` on
a third; a track has 2-7 tags, 4.6 on average.

Key, scale, chord progression, melody, register, mix levels, panning, peak level (-20 to
-3 dBFS) and a noise floor 45-60 dB under the music are random per track. File format
(wav PCM16, flac, mp3, ogg Vorbis), native sample rate (16 to 48 kHz) and channels
(mono, stereo) are dealt out the same balanced way. Music is synthesized at 16 kHz, the
model's rate, with additive synthesis in numpy (:mod:`infra.demo.synth`, :mod:`infra.demo.additive`); the
noise floor is added at the native rate. The same seed gives a byte-identical ``catalog.csv``
and identical decoded audio (ogg files differ in their stream serial number, which libsndfile draws at random).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import functools
import itertools
import multiprocessing
import os
import re

import numpy as np
import threadpoolctl

from infra.demo import synth
from infra.demo.synth import TrackPlan  # the plan is dealt here, rendered there
from runtime.errors import TagscaleError
from runtime.machine import usable_cores

TAG_SOUNDS = {
    "piano": (
        "struck chords of 2-3 notes (G3-F6), one per beat: sharp attack, slightly inharmonic partials, long decay"
    ),
    "strings": (
        "sustained sawtooth-like chords of two detuned voices, slow attack, 5-6 Hz vibrato, a chord per half bar"
    ),
    "flute": (
        "nearly pure high tones (400-1900 Hz) with faint 2nd/3rd harmonics and breath, soft attack, gentle vibrato"
    ),
    "guitar": (
        "plucked single notes arpeggiating the chord, two per beat: instant attack, partials that die away fast"
    ),
    "drums": (
        "kick (a thump falling from 130 to 45 Hz) on beats 1 and 3, noise snare on 2 and 4, hi-hat ticks on eighths"
    ),
    "bass": "a low line (58-115 Hz) on the chord roots, one note per beat",
    "fast": "140-170 BPM: every part plays about twice as many notes per second as in a slow track",
    "slow": "60-80 BPM",
    "bright": "the mix through a high shelf of +10 to +14 dB above about 2.5 kHz: crisp, hissy highs",
    "dark": "the mix through a 12 dB/octave low-pass at 600-1000 Hz: muffled, dull (neither bright nor dark: flat)",
    "vocals": "a sung-like voice, a syllable per beat: gliding pitch, wide vibrato, formants sweeping between vowels "
    "a, e, i, o, u, some syllables opened by an 's'-like hiss",
}
TAGS = tuple(TAG_SOUNDS)
INSTRUMENTS = ("piano", "strings", "flute", "guitar")
FORMATS = {  # file extension -> (libsndfile format, subtype)
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "ogg": ("OGG", "VORBIS"),
}
SAMPLE_RATES = (16_000, 22_050, 32_000, 44_100, 48_000)
# Frames handed to libsndfile per write call. libvorbis copies each call's whole buffer onto the
# stack (an ``alloca`` in its pre-extrapolation step), so one call with a long 48 kHz stereo signal
# overflows the stack and kills the process; a few thousand frames stay far below any stack limit.
WRITE_BLOCK_FRAMES = 4096
MIN_DURATION_S = 3.0
MAX_DURATION_S = 600.0
AUDIO_DIR = "audio"
CATALOG_NAME = "catalog.csv"

_INSTRUMENT_SETS = tuple((name,) for name in INSTRUMENTS) + tuple(itertools.combinations(INSTRUMENTS, 2))
_TRACK_FILE = re.compile(r"demo-\d{5,}\.(wav|flac|mp3|ogg)")


def plan_catalog(*, n_tracks: int, seed: int) -> list[TrackPlan]:
    """Deal tags, formats, sample rates and channel counts to ``n_tracks`` tracks.

    Every dimension is dealt balanced (each value on an equal share of tracks, within
    one) and independently shuffled by ``seed``.

    Parameters
    ----------
    n_tracks : int
        Number of tracks, at least 1.
    seed : int
        Non-negative seed; the same seed gives the same plan.

    Returns
    -------
    list of TrackPlan
        Indexed ``0 .. n_tracks - 1``; tags in :data:`TAGS` order.
    """
    rng = np.random.default_rng(seed)

    def deal(n_values: int) -> np.ndarray:
        return rng.permutation(np.resize(rng.permutation(n_values), n_tracks))

    instruments, drums, tempo, bass, tone, vocals = (deal(n) for n in (len(_INSTRUMENT_SETS), 2, 2, 2, 3, 3))
    extensions, rates, channels = deal(len(FORMATS)), deal(len(SAMPLE_RATES)), deal(2)
    plans = []
    for i in range(n_tracks):
        chosen = set(_INSTRUMENT_SETS[instruments[i]])
        chosen.add("fast" if tempo[i] else "slow")
        chosen.update({"drums"} if drums[i] else ())
        chosen.update({"bass"} if bass[i] else ())
        chosen.update({0: {"bright"}, 1: {"dark"}, 2: ()}[int(tone[i])])
        chosen.update({"vocals"} if vocals[i] == 0 else ())
        plans.append(
            TrackPlan(
                index=i,
                tags=tuple(tag for tag in TAGS if tag in chosen),
                extension=list(FORMATS)[extensions[i]],
                sample_rate=SAMPLE_RATES[rates[i]],
                channels=1 + int(channels[i]),
            )
        )
    return plans


def write_track(plan: TrackPlan, *, audio_dir: str, duration_s: float, seed: int) -> str:
    """Synthesize one planned track and write it to ``audio_dir``; return the file's absolute path."""
    import soundfile

    path = os.path.abspath(os.path.join(audio_dir, plan.file_name))
    file_format, subtype = FORMATS[plan.extension]
    audio = synth.render_track(plan, duration_s=duration_s, seed=seed)
    with soundfile.SoundFile(
        path, "w", plan.sample_rate, audio.shape[1], format=file_format, subtype=subtype
    ) as sound_file:
        for start in range(0, len(audio), WRITE_BLOCK_FRAMES):
            sound_file.write(audio[start : start + WRITE_BLOCK_FRAMES])
    return path


def make_demo_catalog(
    out_dir: str, *, n_tracks: int = 120, seed: int = 0, duration_s: float = 10.0, workers: int | None = None
) -> str:
    """Synthesize a tagged demo catalog: audio files under ``out_dir/audio`` and ``out_dir/catalog.csv``.

    Parameters
    ----------
    out_dir : str
        Output folder, created when missing. Track files of an earlier run that are not
        in the new catalog are removed from ``out_dir/audio``.
    n_tracks : int
        Number of tracks, at least 1.
    seed : int
        Non-negative seed. The same seed writes the same ``catalog.csv``, byte for byte,
        and audio that decodes to the same samples.
    duration_s : float
        Track length in seconds, 3 to 600.
    workers : int, optional
        Processes that synthesize and encode in parallel (1: this process alone); default one
        per available CPU. The output does not depend on it.

    Returns
    -------
    str
        Path of ``catalog.csv`` (header ``track_id,uri,tags``; uri an absolute path,
        tags ``;``-separated in :data:`TAGS` order).

    Raises
    ------
    TagscaleError
        For a bad size, seed or duration, or an output folder that cannot be written.
    """
    if isinstance(n_tracks, bool) or not isinstance(n_tracks, (int, np.integer)) or n_tracks < 1:
        raise TagscaleError(f"--tracks must be a whole number of at least 1, got {n_tracks!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TagscaleError(f"--seed must be a non-negative whole number, got {seed!r}")
    if not MIN_DURATION_S <= duration_s <= MAX_DURATION_S:
        raise TagscaleError(
            f"--duration must be between {MIN_DURATION_S:g} and {MAX_DURATION_S:g} seconds, got {duration_s!r}"
        )
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1):
        raise TagscaleError(f"--workers must be a whole number of at least 1, got {workers!r}")
    audio_dir = os.path.abspath(os.path.join(out_dir, AUDIO_DIR))
    try:
        os.makedirs(audio_dir, exist_ok=True)
    except OSError as error:
        raise TagscaleError(f"cannot create {audio_dir}: {error.strerror or error}") from error
    plans = plan_catalog(n_tracks=int(n_tracks), seed=int(seed))
    write = functools.partial(write_track, audio_dir=audio_dir, duration_s=float(duration_s), seed=int(seed))
    workers = min(len(plans), workers or usable_cores())
    if workers == 1:
        with threadpoolctl.threadpool_limits(1, user_api="blas"):
            paths = [write(plan) for plan in plans]
    else:
        # Processes, not threads: a track is hundreds of small numpy calls, and under one GIL two
        # threads kept only ~1.7 of 2 cores busy. Spawned, not forked: the caller (``tagscale demo``)
        # may already run TensorFlow's threads. Each track has its own generator, so the output
        # does not depend on which process renders it.
        context = multiprocessing.get_context("spawn")
        try:
            with concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=context, initializer=_one_blas_thread
            ) as pool:
                paths = list(pool.map(write, plans, chunksize=4))
        except concurrent.futures.process.BrokenProcessPool as error:
            # The worker is gone without a Python exception to report (killed, out of memory, or a
            # crash inside a native encoder): say so in one line rather than with the pool's traceback.
            raise TagscaleError(
                f"a synthesis worker process died before finishing its tracks (killed, out of memory, "
                f"or crashed in the audio encoder); {CATALOG_NAME} was not written"
            ) from error
    rows = [(plan.track_id, path, ";".join(plan.tags)) for plan, path in zip(plans, paths)]
    written = {plan.file_name for plan in plans}
    for name in os.listdir(audio_dir):
        if _TRACK_FILE.fullmatch(name) and name not in written:
            os.remove(os.path.join(audio_dir, name))
    catalog_path = os.path.join(os.path.abspath(out_dir), CATALOG_NAME)
    with open(catalog_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("track_id", "uri", "tags"))
        writer.writerows(rows)
    return catalog_path


def _one_blas_thread() -> None:
    """BLAS on one thread per worker: the notes' small matrix products lose more to OpenBLAS
    waking its own threads (on cores the workers already fill) than they gain from them."""
    threadpoolctl.threadpool_limits(1, user_api="blas")


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``tagscale demo-catalog``."""
    parser = argparse.ArgumentParser(
        prog="tagscale demo-catalog",
        description="Synthesize a catalog of tagged music-like tracks (wav/flac/mp3/ogg, 16-48 kHz, mono/stereo) "
        "and write DIR/catalog.csv.",
        epilog="tags: " + "; ".join(f"{tag}: {sound}" for tag, sound in TAG_SOUNDS.items()),
    )
    parser.add_argument("dir", metavar="DIR", help="output folder (audio goes to DIR/audio)")
    parser.add_argument("--tracks", type=int, default=120, help="number of tracks (default 120)")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed gives the same catalog (default 0)"
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help=f"seconds per track, at least {MIN_DURATION_S:g} (default 10)"
    )
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (default: one per CPU)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``tagscale demo-catalog DIR [--tracks N] [--seed S] [--duration SECONDS]``."""
    args = build_parser().parse_args(argv)
    catalog_path = make_demo_catalog(
        args.dir, n_tracks=args.tracks, seed=args.seed, duration_s=args.duration, workers=args.workers
    )
    print(f"wrote {args.tracks} tracks and {catalog_path}")
    return 0
