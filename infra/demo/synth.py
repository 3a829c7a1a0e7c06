"""Additive synthesis of the demo catalog's music: the parts each tag names, mixed into one track.

Every part follows one musical skeleton (:class:`Score`: tempo, key, scale, chord
progression); :func:`render_track` mixes the parts a track's tags call for, shapes the tone
(``bright`` / ``dark``), and adds a noise floor at the file's native sample rate.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from infra.demo.additive import SYNTH_RATE, fade, partial_tone

_SCALES = ((0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10))  # major, natural minor
_PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 0), (5, 3, 0, 4), (0, 3, 0, 4))  # scale degrees per bar
_VOWELS = np.array(  # formants F1, F2, F3 in Hz of a, e, i, o, u
    [[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410], [300, 870, 2240]], float
)


@dataclasses.dataclass(frozen=True)
class TrackPlan:
    """One demo track before synthesis: its id, tags and how its file is encoded."""

    index: int
    tags: tuple[str, ...]
    extension: str  # a key of demo_catalog.FORMATS
    sample_rate: int
    channels: int

    @property
    def track_id(self) -> str:
        return f"demo-{self.index:05d}"

    @property
    def file_name(self) -> str:
        return f"{self.track_id}.{self.extension}"


@dataclasses.dataclass(frozen=True)
class Score:
    """The musical skeleton every part of one track follows."""

    n_samples: int
    beat_s: float
    key: int  # semitones of the tonic above C, -5 to 6
    scale: tuple[int, ...]
    progression: tuple[int, ...]  # chord root (scale degree) of each bar, cycled

    def chord_degree(self, time_s: float) -> int:
        return self.progression[int(time_s / (4 * self.beat_s)) % len(self.progression)]

    def pitch(self, degree: int, *, octave_midi: int) -> int:
        """MIDI pitch of a scale degree (any integer) counted from the tonic at ``octave_midi``."""
        return octave_midi + self.key + 12 * (degree // 7) + self.scale[degree % 7]

    def onsets(self, *, per_beat: float, rng: np.random.Generator) -> np.ndarray:
        """Note start times in seconds on a grid of ``per_beat`` notes per beat, humanized by a few ms."""
        times = np.arange(0.0, self.n_samples / SYNTH_RATE, self.beat_s / per_beat)
        return np.maximum(0.0, times + rng.normal(0.0, 0.006, len(times)))


def _place(track: np.ndarray, sound: np.ndarray, start_s: float, gain: float = 1.0) -> None:
    start = int(round(start_s * SYNTH_RATE))
    end = min(len(track), start + len(sound))
    if end > start:
        track[start:end] += gain * sound[: end - start]


def _hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def _velocity(rng: np.random.Generator) -> float:
    return 10 ** (rng.normal(0.0, 2.0) / 20)


def _piano(score: Score, rng: np.random.Generator) -> np.ndarray:
    track = np.zeros(score.n_samples)
    k = np.arange(1, 25)
    amplitudes = k**-1.1 * np.abs(np.sin(np.pi * k / 7.3))  # hammer struck near 1/7 of the string
    decays = 1.6 / (1 + 0.25 * (k - 1))
    octave = 60 + 7 * int(rng.integers(0, 2))
    length = int((score.beat_s + 0.3) * SYNTH_RATE)
    for onset in score.onsets(per_beat=1, rng=rng):
        root = score.chord_degree(onset)
        degrees = (root, root + 2, root + 4)[: 2 + int(rng.random() < 0.7)]
        for degree in degrees:
            note = partial_tone(
                _hz(score.pitch(degree, octave_midi=octave)),
                n_samples=length,
                amplitudes=amplitudes,
                decay_s=decays,
                inharmonicity=4e-4,
                attack_s=0.002,
                release_s=0.15,
                rng=rng,
            )
            _place(track, note, onset, _velocity(rng))
    return track


def _strings(score: Score, rng: np.random.Generator) -> np.ndarray:
    track = np.zeros(score.n_samples)
    k = np.arange(1, 25)
    amplitudes = k**-1.2  # a softened sawtooth: a bowed string's spectrum
    octave = 60 + 5 * int(rng.integers(0, 2))
    length = int((2 * score.beat_s + 0.15) * SYNTH_RATE)
    for onset in score.onsets(per_beat=0.5, rng=rng):
        root = score.chord_degree(onset)
        for degree in (root, root + 2, root + 4)[: 2 + int(rng.random() < 0.5)]:
            for detune in (0.997, 1.003):  # two players a few cents apart
                note = partial_tone(
                    _hz(score.pitch(degree, octave_midi=octave)) * detune,
                    n_samples=length,
                    amplitudes=amplitudes,
                    vibrato_hz=rng.uniform(5.0, 6.2),
                    vibrato_depth=0.008,
                    attack_s=rng.uniform(0.1, 0.2),
                    release_s=0.15,
                    rng=rng,
                )
                _place(track, note, onset, 0.5)
    return track


def _flute(score: Score, rng: np.random.Generator) -> np.ndarray:
    track = np.zeros(score.n_samples)
    degree = int(rng.integers(0, 7))
    onsets = score.onsets(per_beat=1, rng=rng)
    for i, onset in enumerate(onsets):
        degree = int(np.clip(degree + rng.integers(-2, 3), 0, 9))
        if i % 4 == 3 and rng.random() < 0.5:
            continue  # breathe
        n = int((score.beat_s + 0.05) * SYNTH_RATE)
        note = partial_tone(
            _hz(score.pitch(degree, octave_midi=72)),
            n_samples=n,
            amplitudes=np.array([1.0, 0.12, 0.04]),
            vibrato_hz=rng.uniform(4.5, 5.5),
            vibrato_depth=0.004,
            attack_s=0.04,
            release_s=0.06,
            rng=rng,
        )
        breath = rng.standard_normal(n) * fade(n, attack_s=0.04, release_s=0.06)
        _place(track, note + 0.02 * np.diff(breath, prepend=0.0), onset, _velocity(rng))
    return track


def _guitar(score: Score, rng: np.random.Generator) -> np.ndarray:
    track = np.zeros(score.n_samples)
    k = np.arange(1, 31)
    pluck = rng.uniform(0.12, 0.25)  # plucking point as a fraction of the string
    amplitudes = np.abs(np.sin(np.pi * k * pluck)) / k**1.5
    decays = 0.8 / (1 + 0.4 * (k - 1))  # upper partials die first, as in Karplus-Strong
    octave = 57 + int(rng.integers(0, 2)) * 5
    length = int(min(1.5, 2 * score.beat_s) * SYNTH_RATE)
    pattern = (0, 2, 4, 7, 4, 2)  # up-down arpeggio over the chord
    for i, onset in enumerate(score.onsets(per_beat=2, rng=rng)):
        degree = score.chord_degree(onset) + pattern[i % len(pattern)]
        note = partial_tone(
            _hz(score.pitch(degree, octave_midi=octave)),
            n_samples=length,
            amplitudes=amplitudes,
            decay_s=decays,
            attack_s=0.001,
            release_s=0.02,
            rng=rng,
        )
        _place(track, note, onset, _velocity(rng))
    return track


def _bass(score: Score, rng: np.random.Generator) -> np.ndarray:
    track = np.zeros(score.n_samples)
    octave = 36
    length = int(0.9 * score.beat_s * SYNTH_RATE)
    for i, onset in enumerate(score.onsets(per_beat=1, rng=rng)):
        degree = score.chord_degree(onset) + (4 if i % 4 == 2 and rng.random() < 0.5 else 0)
        f0 = _hz(score.pitch(degree, octave_midi=octave))
        f0 *= 2.0 ** (np.floor(np.log2(115.0 / f0)))  # fold into 57.5-115 Hz
        note = partial_tone(
            f0,
            n_samples=length,
            amplitudes=np.array([1.0, 0.45, 0.15, 0.05]),
            decay_s=np.array([2.0, 0.8, 0.4, 0.2]),
            attack_s=0.01,
            release_s=0.05,
            rng=rng,
        )
        _place(track, note, onset, _velocity(rng))
    return track


def _drums(score: Score, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.3 * SYNTH_RATE)) / SYNTH_RATE
    sweep = 45.0 + 85.0 * np.exp(-t / 0.03)
    kick = np.sin(2 * np.pi * np.cumsum(sweep) / SYNTH_RATE) * np.exp(-t / 0.12)
    noise = np.diff(rng.standard_normal(len(t) + 1))  # first difference: tilted up, like a snare's wires
    snare = (0.7 * noise / noise.std() + 0.6 * np.sin(2 * np.pi * 185 * t)) * np.exp(-t / 0.07)
    hiss = np.diff(rng.standard_normal(len(t) + 2), n=2)  # second difference: mostly above 4 kHz
    hat = hiss / hiss.std() * np.exp(-t / 0.02)
    track = np.zeros(score.n_samples)
    for i, onset in enumerate(score.onsets(per_beat=2, rng=rng)):
        step = i % 8
        if step in (0, 4) or (step == 5 and rng.random() < 0.3):
            _place(track, kick, onset, _velocity(rng))
        if step in (2, 6):
            _place(track, snare, onset, 0.5 * _velocity(rng))
        _place(track, hat, onset, (0.25 if step % 2 == 0 else 0.15) * _velocity(rng))
    return track


def _vocals(score: Score, rng: np.random.Generator) -> np.ndarray:
    hop = 160  # control rate: 100 Hz
    n_frames = score.n_samples // hop + 2
    frame_s = np.arange(n_frames) * hop / SYNTH_RATE
    beats = (frame_s / score.beat_s).astype(int)
    degree, pitches = int(rng.integers(0, 7)), {}
    for beat in range(beats[-1] + 1):
        if beat not in pitches:
            degree = int(np.clip(degree + rng.integers(-2, 3), 0, 9))
            pitches[beat] = score.pitch(degree, octave_midi=60)
            if rng.random() < 0.4:
                pitches[beat + 1] = pitches[beat]  # a two-beat note
    midi = _smooth(np.array([pitches[beat] for beat in beats], float), 7)  # ~70 ms portamento between notes
    midi += 0.4 * np.sin(2 * np.pi * rng.uniform(5.0, 6.0) * frame_s)  # vibrato, +-40 cents
    syllable_start = frame_s % score.beat_s < 0.05  # a consonant opens each beat's syllable
    gate = _smooth((beats % 8 < 7) * np.where(syllable_start, 0.15, 1.0), 3)  # and a breath every second bar
    vowel_times = np.arange(0.0, frame_s[-1] + score.beat_s, score.beat_s / 2)  # two vowels per syllable
    vowels = _VOWELS[rng.integers(0, len(_VOWELS), len(vowel_times))]
    formants = np.stack([np.interp(frame_s, vowel_times, vowels[:, i]) for i in range(3)], axis=1)
    f0 = np.interp(np.arange(score.n_samples) / hop, np.arange(n_frames), _hz(midi))
    k = np.arange(1, int(4500 / f0.min()) + 1)
    harmonic_hz = k[:, None] * _hz(midi)[None, :]  # (harmonic, frame)
    widths = np.array([90.0, 110.0, 160.0])
    gains = (
        sum(
            level / (1 + ((harmonic_hz - formants[None, :, i]) / widths[i]) ** 2)
            for i, level in enumerate((1.0, 0.6, 0.3))
        )
        * (harmonic_hz < 4500)
        / k[:, None] ** 0.5
        * gate
    )  # (harmonic, frame)
    cycles = np.cumsum(f0) / SYNTH_RATE
    phase = (2 * np.pi * (cycles - np.floor(cycles))).astype(np.float32)  # wrapped: exact in float32
    frame_pos = np.arange(score.n_samples) / hop
    voice = _harmonics_at_frame_gains(gains, k, phase, hop=hop)
    hiss = np.diff(rng.standard_normal(score.n_samples + 1))  # fricatives ("s", "t") on some syllables
    sibilant = syllable_start & (beats % 8 < 7) & (rng.random(beats[-1] + 1) < 0.5)[beats]
    return voice + 0.25 * hiss * np.interp(frame_pos, np.arange(n_frames), _smooth(sibilant.astype(float), 1))


def _harmonics_at_frame_gains(gains: np.ndarray, k: np.ndarray, phase: np.ndarray, *, hop: int) -> np.ndarray:
    """``sum_k g_k(n) sin(k phase(n))``, each gain linear between its values every ``hop`` samples.

    Within frame ``f`` the gain is ``g[f] + (g[f + 1] - g[f]) j / hop``, so the sum is two
    (harmonic x sample) contractions per frame, a few frames at a time (memory stays bounded
    for long tracks), instead of an interpolation per harmonic over the whole track.
    """
    n_samples, chunk = len(phase), 1024  # frames per step: ~0.2M samples x harmonics in float32
    n_frames = -(-n_samples // hop)
    padded = np.zeros(n_frames * hop, np.float32)
    padded[:n_samples] = phase
    ramp = np.arange(hop, dtype=np.float32) / hop
    harmonics = k.astype(np.float32)[:, None, None]
    out = np.empty((n_frames, hop), np.float32)
    for start in range(0, n_frames, chunk):
        stop = min(n_frames, start + chunk)
        sines = np.sin(harmonics * padded[start * hop : stop * hop].reshape(1, stop - start, hop))
        level = gains[:, start:stop].astype(np.float32)
        slope = (gains[:, start + 1 : stop + 1] - gains[:, start:stop]).astype(np.float32)
        out[start:stop] = np.einsum("kf,kfj->fj", level, sines) + np.einsum("kf,kfj->fj", slope, sines) * ramp
    return out.ravel()[:n_samples].astype(float)


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    padded = np.pad(values, width, mode="edge")
    return np.convolve(padded, np.ones(2 * width + 1) / (2 * width + 1), mode="same")[width:-width]


_PARTS = {
    "piano": _piano,
    "strings": _strings,
    "flute": _flute,
    "guitar": _guitar,
    "drums": _drums,
    "bass": _bass,
    "vocals": _vocals,
}
_PART_LEVEL_DB = {"piano": 0.0, "strings": -1.0, "flute": 1.5, "guitar": 0.0, "drums": 0.0, "bass": 0.0, "vocals": 2.0}


def tone_curve(tags: tuple[str, ...], *, freqs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Magnitude response of the ``bright``/``dark``/neutral tone applied to the whole mix.

    Parameters
    ----------
    tags : tuple of str
        The track's tags; ``bright`` gives a high shelf, ``dark`` a low-pass, neither a flat response.
    freqs : np.ndarray, shape (n_bins,)
        Frequencies in Hz.
    rng : np.random.Generator
        Draws the shelf gain and corner frequency.

    Returns
    -------
    np.ndarray, shape (n_bins,)
    """
    if "bright" in tags:
        gain, corner = 10 ** (rng.uniform(10.0, 14.0) / 20), rng.uniform(2000.0, 3000.0)
        ratio = (freqs / corner) ** 2
        return 1.0 + (gain - 1.0) * ratio / (1.0 + ratio)
    if "dark" in tags:
        return 1.0 / np.sqrt(1.0 + (freqs / rng.uniform(600.0, 1000.0)) ** 4)  # 2nd-order Butterworth
    return np.ones_like(freqs)


def render_track(plan: TrackPlan, *, duration_s: float, seed: int) -> np.ndarray:
    """Synthesize one planned track at its native sample rate and channel count.

    Parameters
    ----------
    plan : TrackPlan
        Tags, sample rate and channels of the track.
    duration_s : float
        Length in seconds.
    seed : int
        The catalog seed; with ``plan.index`` it seeds everything random in the track.

    Returns
    -------
    np.ndarray, shape (n_samples, plan.channels), float32
        Peak between -20 and -3 dBFS, ``n_samples = round(duration_s * plan.sample_rate)``.
    """
    import soxr

    rng = np.random.default_rng([seed, plan.index])
    beats_per_minute = rng.uniform(140.0, 170.0) if "fast" in plan.tags else rng.uniform(60.0, 80.0)
    score = Score(
        n_samples=int(round(duration_s * SYNTH_RATE)),
        beat_s=60.0 / beats_per_minute,
        key=int(rng.integers(-5, 7)),
        scale=_SCALES[int(rng.integers(0, len(_SCALES)))],
        progression=_PROGRESSIONS[int(rng.integers(0, len(_PROGRESSIONS)))],
    )
    mix = np.zeros((score.n_samples, plan.channels))
    for name in (tag for tag in plan.tags if tag in _PARTS):
        part = _PARTS[name](score, rng)
        part *= 10 ** ((_PART_LEVEL_DB[name] + rng.uniform(-2.0, 2.0)) / 20) / max(np.sqrt(np.mean(part**2)), 1e-9)
        angle = (rng.uniform(-0.6, 0.6) + 1) * np.pi / 4  # constant-power pan
        mix += part[:, None] * (np.array([np.cos(angle), np.sin(angle)]) if plan.channels == 2 else 1.0)
    if "bright" in plan.tags or "dark" in plan.tags:  # a neutral tone is flat: no filtering to do
        spectrum = np.fft.rfft(mix, axis=0)
        spectrum *= tone_curve(plan.tags, freqs=np.fft.rfftfreq(len(mix), 1 / SYNTH_RATE), rng=rng)[:, None]
        mix = np.fft.irfft(spectrum, n=len(mix), axis=0)
    mix *= 10 ** (rng.uniform(-20.0, -3.0) / 20) / np.abs(mix).max()
    if plan.sample_rate != SYNTH_RATE:
        mix = soxr.resample(mix, SYNTH_RATE, plan.sample_rate, quality="HQ")
    noise_db = rng.uniform(45.0, 60.0)
    # Uniform white noise of unit variance: as white as Gaussian at 45-60 dB under the music, and
    # a third of the cost at the native rate (a 48 kHz stereo track needs 336,000 draws).
    # In place, in the same order of operations (the same bits): a 600-s 48 kHz stereo track is
    # 460 MB per float64 copy, and each temporary copy adds to every worker's peak memory.
    level = np.sqrt(np.mean(mix**2))  # before the noise is drawn: one temporary at a time
    hiss = rng.random(mix.shape)
    hiss -= 0.5
    hiss *= np.sqrt(12.0)
    hiss *= level
    hiss *= 10 ** (-noise_db / 20)
    mix += hiss
    del hiss
    return np.clip(mix, -1.0, 1.0, out=mix).astype(np.float32)
