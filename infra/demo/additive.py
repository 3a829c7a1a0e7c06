"""Additive synthesis of one note: a sum of sinusoidal partials, computed without a sine per sample.

:func:`partial_tone` is what every pitched part of :mod:`infra.demo.synth` plays. A steady note (decaying
or sustained partials) is one small matrix product (:func:`_damped_sum`); a note with vibrato is read
from a one-period wavetable of its harmonics (:func:`_harmonic_sum`).
"""

from __future__ import annotations

import numpy as np

from model import dsp

SYNTH_RATE = dsp.SAMPLE_RATE


def partial_tone(
    f0: float,
    *,
    n_samples: int,
    amplitudes: np.ndarray,
    decay_s: np.ndarray | None = None,
    inharmonicity: float = 0.0,
    vibrato_hz: float = 0.0,
    vibrato_depth: float = 0.0,
    attack_s: float = 0.005,
    release_s: float = 0.05,
    rng: np.random.Generator,
) -> np.ndarray:
    """One note as a sum of sinusoidal partials (additive synthesis) at :data:`SYNTH_RATE`.

    Parameters
    ----------
    f0 : float
        Fundamental frequency in Hz.
    n_samples : int
        Length of the note, release included.
    amplitudes : np.ndarray, shape (n_partials,)
        Initial amplitude of partial ``k = 1 .. n_partials``; partials above 0.45 x the
        sampling rate are dropped (no aliasing).
    decay_s : np.ndarray, shape (n_partials,), optional
        Exponential decay time constant of each partial; ``None`` sustains them.
    inharmonicity : float
        Stiff-string coefficient ``B``: partial ``k`` sits at ``k f0 sqrt(1 + B k^2)``.
    vibrato_hz, vibrato_depth : float
        Rate and relative depth of a sinusoidal frequency modulation; only for harmonic
        partials (``inharmonicity`` 0).
    attack_s, release_s : float
        Lengths of the linear fade-in and fade-out.
    rng : np.random.Generator
        Draws the partials' start phases and the vibrato phase.

    Returns
    -------
    np.ndarray, shape (n_samples,), float64

    Raises
    ------
    ValueError
        For vibrato on inharmonic partials.
    """
    k = np.arange(1, len(amplitudes) + 1)
    freqs = f0 * k * np.sqrt(1.0 + inharmonicity * k**2)
    keep = freqs < 0.45 * SYNTH_RATE
    vibrato_phase = rng.uniform(0, 2 * np.pi) if vibrato_depth else 0.0
    phases = rng.uniform(0, 2 * np.pi, int(keep.sum()))
    amplitudes = np.asarray(amplitudes, float)[keep]
    if vibrato_depth:
        if inharmonicity:
            raise ValueError("vibrato needs harmonic partials (inharmonicity 0)")
        # float32 is plenty for the slow modulator (phase < 100 rad); the integral below is float64
        vibrato = np.sin(
            (2 * np.pi * vibrato_hz / SYNTH_RATE * np.arange(n_samples) + vibrato_phase).astype(np.float32)
        )
        tone = _harmonic_sum(
            f0 * np.cumsum(1.0 + vibrato_depth * vibrato, dtype=float) / SYNTH_RATE, amplitudes * np.exp(1j * phases)
        )
    else:
        rates = 2j * np.pi * freqs[keep] / SYNTH_RATE  # per sample: rotation, and decay below
        if decay_s is not None:
            rates = rates - 1.0 / (np.asarray(decay_s, float)[keep] * SYNTH_RATE)
        tone = _damped_sum(rates, amplitudes * np.exp(1j * phases), n_samples)
    return tone * fade(n_samples, attack_s=attack_s, release_s=release_s)


_BLOCK = 256  # samples per row of _damped_sum's matrix product; about sqrt of a note's length


def _damped_sum(rates: np.ndarray, coefficients: np.ndarray, n_samples: int) -> np.ndarray:
    """``Im sum_k c_k exp(r_k n)`` for ``n < n_samples``, as one small matrix product.

    Sample ``n = b L + j`` of partial ``k`` factors into ``c_k exp(r_k b L)`` (one value per
    block ``b``) times ``exp(r_k j)`` (the same ``L`` values in every block), so the sum over
    partials is a (blocks x partials) @ (partials x L) product: no sine or exponential per
    sample, and float64 phases throughout.
    """
    n_blocks = -(-n_samples // _BLOCK)
    within = np.exp(rates[:, None] * np.arange(_BLOCK))  # (partial, j)
    starts = coefficients[:, None] * np.exp(rates[:, None] * (_BLOCK * np.arange(n_blocks)))  # (partial, b)
    blocks = starts.real.T @ within.imag + starts.imag.T @ within.real  # Im(starts.T @ within)
    return blocks.ravel()[:n_samples]


_TABLE_SIZE = 4096  # points per period: linear interpolation then errs < 2e-4 of a 24th harmonic


def _harmonic_sum(cycles: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """``Im sum_k c_k exp(2 pi i k cycles)``, ``k = 1 .. len(c)``, read from a one-period wavetable.

    A frequency-modulated note has no block structure, but its partials are harmonics: the
    sum is periodic in ``cycles`` with period 1. One period comes from an inverse FFT of the
    coefficients, and each sample is a linear interpolation in it at ``cycles mod 1``: two
    lookups per sample instead of a sine per partial and sample.
    """
    spectrum = np.zeros(_TABLE_SIZE // 2 + 1, complex)
    spectrum[1 : len(coefficients) + 1] = -0.5j * _TABLE_SIZE * coefficients  # irfft's Re(X e^...) = Im(c e^...)
    table = np.fft.irfft(spectrum, _TABLE_SIZE)
    table = np.append(table, table[0])  # the period's end, for the last interval
    position = (cycles - np.floor(cycles)) * _TABLE_SIZE
    index = np.minimum(position.astype(np.intp), _TABLE_SIZE - 1)
    lower = table[index]
    return lower + (position - index) * (table[index + 1] - lower)


def fade(n_samples: int, *, attack_s: float, release_s: float) -> np.ndarray:
    """Linear fade-in over ``attack_s`` and fade-out over ``release_s``; ones in between."""
    envelope = np.ones(n_samples)
    attack, release = max(1.0, attack_s * SYNTH_RATE), max(1.0, release_s * SYNTH_RATE)
    head, tail = min(n_samples, int(np.ceil(attack))), min(n_samples, int(np.ceil(release)))
    envelope[:head] = np.arange(head) / attack  # only the ramps are computed: most of a note is flat
    envelope[n_samples - tail :] *= np.arange(tail)[::-1] / release
    return envelope
