"""The signal front: every constant and function that turns audio into model input.

This module is the single definition shared by featurize, training, serving exports and
the pretrained musicnn models. The musicnn weights were trained on exactly these features
(librosa defaults: centred STFT, Slaney mel scale and area normalisation), so nothing here
may drift from librosa's numbers; ``tests/test_dsp.py`` checks that against librosa.

An *example* (a "patch") is ``PATCH_FRAMES`` = 187 log-mel frames, about 3 s. Its waveform
is ``PATCH_SAMPLES`` = 48,128 samples: the 187 hops plus half an FFT window of context on
each side, so the uncentred STFT of one patch equals the same 187 frames of librosa's
centred STFT of the whole track (the track is zero-padded by ``N_FFT // 2`` at both ends,
as librosa does). Consecutive patch waveforms overlap by ``N_FFT - HOP_LENGTH`` samples.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000
N_FFT = 512
HOP_LENGTH = 256
N_MELS = 96
LOG_MULTIPLIER = 10_000.0  # log10(LOG_MULTIPLIER * mel + 1), as musicnn
PATCH_FRAMES = 187
PATCH_HOP_SAMPLES = PATCH_FRAMES * HOP_LENGTH  # 47,872: patches do not overlap in frames
PATCH_SAMPLES = (PATCH_FRAMES - 1) * HOP_LENGTH + N_FFT  # 48,128
PATCH_SECONDS = PATCH_HOP_SAMPLES / SAMPLE_RATE  # 2.992 s of new audio per patch


def constants() -> dict:
    """Return the signal constants as a plain dict (written into metadata and exports)."""
    return {
        "sample_rate": SAMPLE_RATE,
        "n_fft": N_FFT,
        "hop_length": HOP_LENGTH,
        "n_mels": N_MELS,
        "mel_scale": "slaney",
        "mel_norm": "slaney",
        "log_compression": f"log10({LOG_MULTIPLIER:g} * mel + 1)",
        "patch_frames": PATCH_FRAMES,
        "patch_samples": PATCH_SAMPLES,
        "patch_hop_samples": PATCH_HOP_SAMPLES,
    }


def hz_to_mel(frequencies):
    """Convert Hz to mels on the Slaney scale (linear below 1 kHz, logarithmic above).

    Parameters
    ----------
    frequencies : float or np.ndarray
        Frequencies in Hz.

    Returns
    -------
    np.ndarray
        Mel values, same shape as ``frequencies``.
    """
    frequencies = np.asanyarray(frequencies, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = frequencies / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_region = frequencies >= min_log_hz
    return np.where(
        log_region,
        min_log_mel + np.log(np.maximum(frequencies, min_log_hz) / min_log_hz) / logstep,
        mels,
    )


def mel_to_hz(mels):
    """Convert Slaney-scale mels back to Hz; the inverse of :func:`hz_to_mel`."""
    mels = np.asanyarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(
        mels >= min_log_mel,
        min_log_hz * np.exp(logstep * (mels - min_log_mel)),
        f_sp * mels,
    )


def mel_filterbank(*, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS):
    """Triangular mel filterbank with Slaney area normalisation (librosa's default).

    Parameters
    ----------
    sample_rate : int
        Sampling rate of the audio in Hz.
    n_fft : int
        FFT size; the filterbank covers ``n_fft // 2 + 1`` frequency bins.
    n_mels : int
        Number of mel bands, spaced evenly in Slaney mels from 0 Hz to Nyquist.

    Returns
    -------
    np.ndarray, shape (n_mels, n_fft // 2 + 1), float32
        Weights: ``mel_power = weights @ power_spectrum``.
    """
    if n_mels < 1 or n_fft < 2 or sample_rate <= 0:
        raise ValueError(f"bad filterbank size: sample_rate={sample_rate}, n_fft={n_fft}, n_mels={n_mels}")
    fft_freqs = np.linspace(0, sample_rate / 2, 1 + n_fft // 2)
    mel_points = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2 : n_mels + 2] - mel_points[:n_mels]))[:, None]
    return weights.astype(np.float32)


def log_compress(mel_power):
    """``log10(10000 * mel + 1)``: musicnn's compression, for numpy or TF tensors."""
    import tensorflow as tf

    if isinstance(mel_power, np.ndarray):
        return np.log10(LOG_MULTIPLIER * mel_power + 1.0).astype(np.float32)
    return tf.math.log(LOG_MULTIPLIER * mel_power + 1.0) / tf.math.log(tf.constant(10.0, mel_power.dtype))


def log_mel_patches(waveform_patches):
    """Log-mel spectrogram of waveform patches, in TensorFlow (usable inside tf.Transform and exports).

    Parameters
    ----------
    waveform_patches : tf.Tensor, shape (batch, PATCH_SAMPLES), float32
        16 kHz mono patches as cut by :func:`patch_waveform` (they carry half a window of context
        at each end, so no centring padding is applied here).

    Returns
    -------
    tf.Tensor, shape (batch, PATCH_FRAMES, N_MELS), float32
    """
    import tensorflow as tf

    waveform_patches = tf.convert_to_tensor(waveform_patches, tf.float32)
    stft = tf.signal.stft(
        waveform_patches,
        frame_length=N_FFT,
        frame_step=HOP_LENGTH,
        fft_length=N_FFT,
        window_fn=tf.signal.hann_window,  # periodic Hann, as librosa/scipy
        pad_end=False,
    )  # (batch, frames, n_fft // 2 + 1)
    power = tf.math.square(tf.math.abs(stft))
    mel = tf.linalg.matmul(power, tf.constant(mel_filterbank().T))  # (batch, frames, mel)
    return log_compress(mel)


def n_patches(n_samples: int) -> int:
    """Number of full, non-overlapping 187-frame patches in a track of ``n_samples``.

    Matches musicnn's patching of librosa's centred STFT (``1 + n_samples // HOP_LENGTH``
    frames); a track shorter than one patch yields one zero-padded patch.
    """
    if n_samples <= 0:
        return 0
    return max(1, (1 + n_samples // HOP_LENGTH) // PATCH_FRAMES)


def tail_frames(n_samples: int, *, max_patches: int | None = None) -> int:
    """Frames of a track's log-mel after its last whole patch (0 to 186): what a random crop
    needs beyond the patches to reach the track's last frame.

    The centred STFT has ``1 + n_samples // HOP_LENGTH`` frames; a track shorter than one patch
    (one zero-padded patch) or cut to ``max_patches`` has none.
    """
    count = n_patches(n_samples)
    if count == 0 or (max_patches is not None and count > max_patches):
        return 0
    return max(0, 1 + n_samples // HOP_LENGTH - count * PATCH_FRAMES)


def tail_patch(waveform: np.ndarray) -> np.ndarray:
    """The waveform patch whose 187 frames are the track's last ones (the zero-padded track's
    samples from ``(T - 187) * HOP_LENGTH``, ``T`` frames in all), as :func:`patch_waveform`
    cuts the others; its last :func:`tail_frames` frames follow the last whole patch.

    Returns
    -------
    np.ndarray, shape (PATCH_SAMPLES,), float32
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    start = (1 + len(waveform) // HOP_LENGTH - PATCH_FRAMES) * HOP_LENGTH
    if start < 0:
        raise ValueError(f"a track of {len(waveform)} samples is shorter than one patch: it has no tail")
    padded = np.zeros(len(waveform) + N_FFT, np.float32)  # the centring: N_FFT // 2 zeros on each side
    padded[N_FFT // 2 : N_FFT // 2 + len(waveform)] = waveform
    return padded[start : start + PATCH_SAMPLES].copy()


def patch_waveform(waveform: np.ndarray, *, max_patches: int | None = None) -> np.ndarray:
    """Cut a track into the waveform patches that :func:`log_mel_patches` consumes.

    Parameters
    ----------
    waveform : np.ndarray, shape (n_samples,)
        16 kHz mono audio.
    max_patches : int, optional
        Keep at most this many patches (the first ones).

    Returns
    -------
    np.ndarray, shape (n_patches, PATCH_SAMPLES), float32
        Patch ``k`` is the zero-padded track's samples ``[k * PATCH_HOP_SAMPLES,
        k * PATCH_HOP_SAMPLES + PATCH_SAMPLES)``; its frames are frames
        ``[187 k, 187 (k + 1))`` of the centred STFT of the whole track.
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim != 1:
        raise ValueError(f"expected mono audio of shape (n_samples,), got shape {waveform.shape}")
    count = n_patches(len(waveform))
    if max_patches is not None:
        count = min(count, max_patches)
    if count == 0:
        return np.zeros((0, PATCH_SAMPLES), np.float32)
    needed = (count - 1) * PATCH_HOP_SAMPLES + PATCH_SAMPLES
    padded = np.zeros(max(needed, len(waveform) + N_FFT), np.float32)
    padded[N_FFT // 2 : N_FFT // 2 + len(waveform)] = waveform
    strided = np.lib.stride_tricks.as_strided(
        padded,
        shape=(count, PATCH_SAMPLES),
        strides=(PATCH_HOP_SAMPLES * padded.strides[0], padded.strides[0]),
        writeable=False,
    )
    return np.ascontiguousarray(strided)
