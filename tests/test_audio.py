"""Decoding with real ffmpeg and libsndfile on generated audio and on the real clips."""

import os
import subprocess

import numpy as np
import pytest

from model import dsp
from pipelines import audio


@pytest.mark.parametrize("name", ["a.wav", "a.flac", "a.ogg", "a.mp3"])
@pytest.mark.parametrize("decoder", ["ffmpeg", "soundfile"])
def test_decodes_four_formats_to_16k_mono(write_audio, name, decoder):
    path = write_audio(name, seconds=4.0, sample_rate=44100, channels=2)
    decoded = audio.decode_audio(str(path), decoder=decoder)
    assert decoded.decoder == decoder
    assert decoded.samples.dtype == np.float32 and decoded.samples.ndim == 1
    # MP3 adds encoder delay/padding (a few ms); everything else is sample-exact in length.
    assert abs(decoded.duration_s - 4.0) < 0.08
    import soundfile

    source = soundfile.read(str(path), dtype="float32")[0].mean(axis=1)

    def rms(x):
        return float(np.sqrt(np.mean(np.square(x))))

    # The mono mix is the channel mean (librosa's to_mono), not ffmpeg's louder -3 dB default.
    assert abs(rms(decoded.samples) / rms(source) - 1) < 0.05


@pytest.mark.parametrize("name", ["b.wav", "b.flac", "b.ogg", "b.mp3"])
def test_ffmpeg_and_soundfile_agree(write_audio, name):
    path = str(write_audio(name, seconds=3.0, sample_rate=22050, channels=1, seed=3))
    a = audio.decode_audio(path, decoder="ffmpeg").samples
    b = audio.decode_audio(path, decoder="soundfile").samples
    n = min(len(a), len(b))
    # Spectra agree closely even where resamplers and MP3 decoders differ by a few samples.
    mel_a = dsp.log_mel_patches(dsp.patch_waveform(a[:n])).numpy()
    mel_b = dsp.log_mel_patches(dsp.patch_waveform(b[:n])).numpy()
    assert np.median(np.abs(mel_a - mel_b)) < 0.05


def test_file_uri_and_plain_path_decode_the_same(write_audio):
    path = write_audio("c.flac", seconds=3.0)
    np.testing.assert_array_equal(
        audio.decode_audio(str(path)).samples, audio.decode_audio("file://" + str(path)).samples
    )


def test_max_duration_caps_decoding(write_audio):
    path = str(write_audio("long.wav", seconds=12.0, sample_rate=48000))
    for decoder in ("ffmpeg", "soundfile"):
        decoded = audio.decode_audio(path, decoder=decoder, max_duration_s=5.0)
        assert abs(decoded.duration_s - 5.0) < 0.01, decoder


def test_resampling_keeps_pitch(write_audio, tmp_path):
    import soundfile

    t = np.arange(44100 * 2) / 44100
    soundfile.write(tmp_path / "tone.flac", 0.5 * np.sin(2 * np.pi * 1000 * t), 44100)
    for decoder in ("ffmpeg", "soundfile"):
        y = audio.decode_audio(str(tmp_path / "tone.flac"), decoder=decoder).samples
        peak_hz = np.argmax(np.abs(np.fft.rfft(y))) * 16000 / len(y)
        assert abs(peak_hz - 1000) < 2, decoder


def test_real_clips_decode_with_ffmpeg_and_auto(real_clips):
    import soundfile

    for clip in real_clips:
        expected = soundfile.info(str(clip)).duration
        for decoder in ("ffmpeg", "auto"):
            decoded = audio.decode_audio(str(clip), decoder=decoder)
            assert abs(decoded.duration_s - expected) < 0.05, (clip.name, decoder)
            assert np.isfinite(decoded.samples).all() and np.abs(decoded.samples).max() > 0.01


def test_missing_zero_byte_and_text_files_raise_decode_error(tmp_path):
    (tmp_path / "empty.mp3").write_bytes(b"")
    (tmp_path / "text.mp3").write_text("this is not audio\n" * 50)
    cases = {
        str(tmp_path / "missing.mp3"): "file not found",
        str(tmp_path / "empty.mp3"): "empty file",
        str(tmp_path / "text.mp3"): "ffmpeg failed",
    }
    for uri, reason in cases.items():
        with pytest.raises(audio.DecodeError, match=reason):
            audio.decode_audio(uri)


def test_shell_metacharacters_in_names_are_just_names(write_audio, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("still here")
    path = write_audio("x.wav")
    weird = tmp_path / "a; rm -rf victim $(touch pwned) `touch pwned`.wav"
    os.rename(path, weird)
    for decoder in ("ffmpeg", "soundfile"):
        assert audio.decode_audio(str(weird), decoder=decoder).duration_s > 3.9
    assert victim.exists() and not (tmp_path / "pwned").exists()


def test_ffmpeg_timeout_is_a_decode_error(tmp_path, write_audio):
    path = write_audio("slow.wav", seconds=2.0)
    with pytest.raises(audio.DecodeError, match="timed out"):
        audio.decode_with_ffmpeg(str(path), max_duration_s=10, timeout_s=0.0001)


def test_ffmpeg_binary_is_found_without_system_ffmpeg(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    exe = audio.ffmpeg_executable()
    assert "imageio_ffmpeg" in exe
    version = subprocess.run([exe, "-version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("ffmpeg version")


def test_unknown_decoder_is_rejected():
    with pytest.raises(ValueError, match="unknown decoder"):
        audio.decode_audio("x.wav", decoder="magic")
