"""The signal front against librosa, the independent reference the musicnn weights were trained on."""

import librosa
import numpy as np
import pytest

from model import dsp


def test_filterbank_equals_librosa_default_slaney():
    ours = dsp.mel_filterbank()
    reference = librosa.filters.mel(sr=16000, n_fft=512, n_mels=96)  # htk=False, norm='slaney'
    assert ours.shape == (96, 257)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-8)


def test_filterbank_is_not_htk():
    htk = librosa.filters.mel(sr=16000, n_fft=512, n_mels=96, htk=True)
    assert np.abs(dsp.mel_filterbank() - htk).max() > 1e-3


def test_hz_mel_round_trip_and_librosa_scale():
    freqs = np.array([0.0, 200.0, 999.0, 1000.0, 4000.0, 8000.0])
    np.testing.assert_allclose(dsp.hz_to_mel(freqs), librosa.hz_to_mel(freqs), rtol=1e-9)
    np.testing.assert_allclose(dsp.mel_to_hz(dsp.hz_to_mel(freqs)), freqs, rtol=1e-9, atol=1e-9)


def librosa_log_mel(y):
    mel = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, hop_length=256, n_mels=96)
    return np.log10(10000 * mel.T.astype(np.float32) + 1)  # (frames, mel)


@pytest.mark.parametrize("seconds", [2.0, 6.5, 9.0])
def test_patch_log_mel_equals_librosa_whole_track_frames(seconds):
    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * 16000)) / 16000
    y = (0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)
    patches = dsp.patch_waveform(y)
    assert patches.shape == (dsp.n_patches(len(y)), dsp.PATCH_SAMPLES)
    ours = dsp.log_mel_patches(patches).numpy()  # (patches, 187, 96)
    reference = librosa_log_mel(y)
    for k in range(len(patches)):
        expected = reference[k * 187 : (k + 1) * 187]
        if len(expected) == 187:
            np.testing.assert_allclose(ours[k], expected, atol=2e-4, rtol=1e-4)
        else:  # a short track's single patch is zero-padded: the frames it has must match
            np.testing.assert_allclose(ours[k, : len(expected)][:-2], expected[:-2], atol=2e-4, rtol=1e-4)


def test_n_patches_matches_musicnn_frame_count():
    # librosa gives 1 + n // 256 centred frames; musicnn takes whole 187-frame patches.
    assert dsp.n_patches(0) == 0
    assert dsp.n_patches(100) == 1  # shorter than a patch: one zero-padded patch
    frames_for_two = 2 * 187
    assert dsp.n_patches((frames_for_two - 1) * 256) == 2
    assert dsp.n_patches((frames_for_two - 1) * 256 - 1) == 1
    assert dsp.n_patches(30 * 16000) == 10


def test_patches_are_contiguous_slices_of_the_padded_track():
    y = np.arange(200_000, dtype=np.float32)
    patches = dsp.patch_waveform(y, max_patches=3)
    assert patches.shape == (3, dsp.PATCH_SAMPLES)
    assert patches[0, 0] == 0 and patches[0, 256] == 0 and patches[0, 257] == 1
    assert patches[1, 256] == dsp.PATCH_HOP_SAMPLES
    with pytest.raises(ValueError, match="mono"):
        dsp.patch_waveform(np.zeros((10, 2)))
