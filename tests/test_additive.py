"""Tests for infra/demo/additive.py: fast additive synthesis against the plain sum of sines it replaces."""

from __future__ import annotations

import numpy as np
import pytest

from infra.demo.additive import SYNTH_RATE, fade, partial_tone


def reference_tone(
    f0,
    *,
    n_samples,
    amplitudes,
    decay_s=None,
    inharmonicity=0.0,
    vibrato_hz=0.0,
    vibrato_depth=0.0,
    attack_s=0.005,
    release_s=0.05,
    seed,
):
    """One sine per partial and sample in float64, drawing from the generator in partial_tone's order."""
    rng = np.random.default_rng(seed)
    k = np.arange(1, len(amplitudes) + 1)
    freqs = f0 * k * np.sqrt(1.0 + inharmonicity * k**2)
    keep = freqs < 0.45 * SYNTH_RATE
    t = np.arange(n_samples) / SYNTH_RATE
    warp = t
    if vibrato_depth:
        phase = rng.uniform(0, 2 * np.pi)
        warp = np.cumsum(1.0 + vibrato_depth * np.sin(2 * np.pi * vibrato_hz * t + phase)) / SYNTH_RATE
    phases = rng.uniform(0, 2 * np.pi, (keep.sum(), 1))
    partials = np.sin(2 * np.pi * freqs[keep, None] * warp + phases) * np.asarray(amplitudes)[keep, None]
    if decay_s is not None:
        partials *= np.exp(-t / np.asarray(decay_s)[keep, None])
    return partials.sum(axis=0) * fade(n_samples, attack_s=attack_s, release_s=release_s)


K24 = np.arange(1, 25)
CASES = {
    "piano: decaying, inharmonic": dict(
        f0=392.0,
        n_samples=19_000,
        amplitudes=K24**-1.1,
        decay_s=1.6 / (1 + 0.25 * (K24 - 1)),
        inharmonicity=4e-4,
        attack_s=0.002,
        release_s=0.15,
    ),
    "guitar: fast decays, 30 partials": dict(
        f0=110.0,
        n_samples=24_000,
        amplitudes=1 / np.arange(1, 31) ** 1.5,
        decay_s=0.8 / (1 + 0.4 * np.arange(30)),
        attack_s=0.001,
        release_s=0.02,
    ),
    "sustained, length not a block multiple": dict(f0=1000.0, n_samples=1_001, amplitudes=np.array([1.0, 0.5, 0.25])),
    "strings: vibrato, partials above 0.45 fs dropped": dict(
        f0=523.0,
        n_samples=34_400,
        amplitudes=K24**-1.2,
        vibrato_hz=5.6,
        vibrato_depth=0.008,
        attack_s=0.15,
    ),
    "flute: vibrato, 3 partials": dict(
        f0=1500.0,
        n_samples=17_000,
        amplitudes=np.array([1.0, 0.12, 0.04]),
        vibrato_hz=5.0,
        vibrato_depth=0.004,
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_partial_tone_matches_a_sum_of_sines(name):
    kwargs = CASES[name]
    fast = partial_tone(**kwargs, rng=np.random.default_rng(3))
    slow = reference_tone(**kwargs, seed=3)
    assert fast.shape == slow.shape == (kwargs["n_samples"],) and fast.dtype == np.float64
    error = np.abs(fast - slow).max() / np.abs(slow).max()
    # measured: <= 4e-13 steady (float64 phases), 3-6e-6 with vibrato (the wavetable's linear interpolation)
    assert error < (1e-5 if kwargs.get("vibrato_depth") else 1e-11), error


def test_partial_tone_draws_the_same_numbers_as_before():
    """Both paths consume the generator exactly as the per-partial sines did: the catalog's other draws stay put."""
    for kwargs in CASES.values():
        rng = np.random.default_rng(5)
        partial_tone(**kwargs, rng=rng)
        expected = np.random.default_rng(5)
        k = np.arange(1, len(kwargs["amplitudes"]) + 1)
        n_kept = int(
            (kwargs["f0"] * k * np.sqrt(1 + kwargs.get("inharmonicity", 0.0) * k**2) < 0.45 * SYNTH_RATE).sum()
        )
        expected.uniform(0, 2 * np.pi, n_kept + bool(kwargs.get("vibrato_depth")))
        assert rng.random() == expected.random()


def test_vibrato_on_inharmonic_partials_is_refused():
    with pytest.raises(ValueError, match="harmonic"):
        partial_tone(
            200.0,
            n_samples=100,
            amplitudes=np.ones(3),
            inharmonicity=1e-4,
            vibrato_depth=0.01,
            vibrato_hz=5.0,
            rng=np.random.default_rng(0),
        )


def test_fade_ramps_in_and_out_linearly():
    envelope = fade(100, attack_s=10 / SYNTH_RATE, release_s=20 / SYNTH_RATE)
    np.testing.assert_allclose(envelope[:10], np.arange(10) / 10)
    np.testing.assert_array_equal(envelope[10:80], 1.0)
    np.testing.assert_allclose(envelope[80:], np.arange(20)[::-1] / 20)


def test_vocal_harmonics_match_per_harmonic_interpolation_across_chunks():
    """infra.demo.synth's voice: gains linear between frames, over more frames than one chunk (1,024)."""
    from infra.demo.synth import _harmonics_at_frame_gains

    rng = np.random.default_rng(2)
    hop, n_samples = 160, 1_100 * 160 + 37
    n_frames = n_samples // hop + 2
    gains = rng.random((6, n_frames))
    cycles = np.cumsum(rng.uniform(200.0, 400.0, n_samples)) / SYNTH_RATE
    phase = (2 * np.pi * (cycles - np.floor(cycles))).astype(np.float32)
    harmonics = np.arange(1, 7)
    expected = sum(
        np.interp(np.arange(n_samples) / hop, np.arange(n_frames), row) * np.sin(np.float32(h) * phase)
        for row, h in zip(gains, harmonics)
    )
    got = _harmonics_at_frame_gains(gains, harmonics, phase, hop=hop)
    assert got.shape == (n_samples,)
    assert np.abs(got - expected).max() < 1e-6 * np.abs(expected).max()  # measured 1.3e-7 (float32 sums)
