"""Decoding with real ffmpeg and libsndfile on generated audio and on the real clips."""

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from model import dsp
from pipelines.decode import audio


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


@pytest.mark.slow
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


def float_wav(path, peak, *, poison=None, seconds=3.0, rate=22050):
    """A stereo 32-bit float WAV: a tone scaled to ``peak``, with ``poison`` (NaN, inf) at one sample."""
    import soundfile
    from made import synth_tone

    samples = synth_tone(seconds, rate, channels=2).astype(np.float64)
    samples *= peak / np.abs(samples).max()
    if poison is not None:
        samples[rate, 1] = poison
    soundfile.write(path, samples.astype(np.float32), rate, subtype="FLOAT")
    return str(path)


def test_huge_or_non_finite_float_samples_are_refused_by_every_decoder(tmp_path):
    """1e20 or 3e38 are finite float32 samples that turn the log-mel into NaN; every decoder
    refuses them, and ``auto`` gives soundfile's reason without trying ffmpeg."""
    cases = {
        "e20.wav": (1e20, None, "sample values out of range: peak |x| 1e+20 is over 1000 (full scale is 1)"),
        "e38.wav": (3e38, None, "sample values out of range: peak |x| 3e+38 is over 1000 (full scale is 1)"),
        "nan.wav": (0.5, np.nan, "decoded audio contains NaN or infinity"),
        "inf.wav": (0.5, np.inf, "decoded audio contains NaN or infinity"),
    }
    for name, (peak, poison, reason) in cases.items():
        path = float_wav(tmp_path / name, peak, poison=poison)
        for decoder in ("soundfile", "auto"):
            with pytest.raises(audio.DecodeLimit, match=f"^{re.escape(reason)}$"):
                audio.decode_audio(path, decoder=decoder)
        with pytest.raises(audio.DecodeLimit, match="out of range|NaN or infinity"):
            audio.decode_audio(path, decoder="ffmpeg")
    loud = float_wav(tmp_path / "loud.wav", 4.0)  # over full scale, as float masters can be: kept, unclipped
    for decoder in ("soundfile", "ffmpeg"):
        assert 2.0 < np.abs(audio.decode_audio(loud, decoder=decoder).samples).max() < 4.0


@pytest.mark.slow
def test_featurize_puts_huge_float_samples_in_the_dead_letter_not_the_shards(tmp_path):
    import json

    import pyarrow.parquet as pq

    from pipelines import featurize

    rows = ["track_id,uri,tags"]
    for i in range(3):
        rows.append(f"good{i},{float_wav(tmp_path / f'good{i}.wav', 0.5, seconds=4.0 + i)},rock")
    rows.append(f"e20,{float_wav(tmp_path / 'e20.wav', 1e20, seconds=4.0)},rock")
    rows.append(f"e38,{float_wav(tmp_path / 'e38.wav', 3e38, seconds=4.0)},jazz")
    (tmp_path / "catalog.csv").write_text("\n".join(rows) + "\n")
    output = tmp_path / "out"
    metadata = featurize.run(["--catalog", str(tmp_path / "catalog.csv"), "--output", str(output)])
    assert (metadata["tracks_in"], metadata["tracks_ok"], metadata["tracks_failed"]) == (5, 3, 2)
    assert sum(split["tracks"] for split in metadata["splits"].values()) == 3
    dead = {row["track_id"]: row for row in pq.read_table(output / "dead_letter").to_pylist()}
    assert set(dead) == {"e20", "e38"}
    assert {row["stage"] for row in dead.values()} == {"decode"}
    assert dead["e20"]["error"] == "sample values out of range: peak |x| 1e+20 is over 1000 (full scale is 1)"
    assert dead["e38"]["error"] == "sample values out of range: peak |x| 3e+38 is over 1000 (full scale is 1)"
    assert json.loads((output / "metadata.json").read_text())["tracks_ok"] == 3


def whole_read_decode(path, max_duration_s=600.0):
    """The decoder as it was before it streamed: the whole file read as float32, mixed down, resampled."""
    import soundfile
    import soxr

    with soundfile.SoundFile(path) as handle:
        rate = handle.samplerate
        samples = handle.read(frames=int(max_duration_s * rate), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if rate == dsp.SAMPLE_RATE:
        return mono
    return soxr.resample(mono, rate, dsp.SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)


def test_streamed_decoding_matches_the_whole_file_read(write_audio, real_clips):
    """Blocks of frames read, mixed and resampled with soxr's stream give the whole-file result:
    to the bit for wav, flac and ogg (soxr's stream is its one-shot resampler, chunked), and
    within 3e-7 for MP3, whose libsndfile decoder rounds a little differently per read (measured
    up to 2.1e-7 over ten 20-s MP3s, 16-48 kHz, mono and stereo). MP3 read in blocks that end
    inside an MPEG frame was off by 3e-3 on the 22 kHz mono file here (0.4 on others)."""
    files = [
        write_audio("a.wav", seconds=9.0, sample_rate=44100, channels=2, seed=1),
        write_audio("b.flac", seconds=9.0, sample_rate=48000, channels=2, seed=2),
        write_audio("c.ogg", seconds=9.0, sample_rate=32000, channels=1, seed=3),
        write_audio("d.wav", seconds=9.0, sample_rate=16000, channels=2, seed=4),
        *real_clips[:3],
    ]
    for path in files:
        for max_duration_s in (600.0, 5.3):
            streamed = audio.decode_with_soundfile(str(path), max_duration_s=max_duration_s)
            expected = whole_read_decode(str(path), max_duration_s)
            assert streamed.view(np.uint32).tolist() == expected.view(np.uint32).tolist(), (path, max_duration_s)
    for rate, channels in ((22050, 1), (44100, 1), (24000, 2)):
        path = str(write_audio(f"{rate}.mp3", seconds=20.0, sample_rate=rate, channels=channels, seed=rate + channels))
        streamed, expected = audio.decode_with_soundfile(path, max_duration_s=600.0), whole_read_decode(path)
        assert streamed.shape == expected.shape
        assert np.abs(streamed - expected).max() <= 3e-7, (rate, np.abs(streamed - expected).max())


def silent_flac(path, seconds, *, rate=192_000, channels=8):
    """A FLAC of digital silence: small on disk however many samples it decodes to."""
    import soundfile

    second = np.zeros((rate, channels), np.float32)
    with soundfile.SoundFile(path, "w", rate, channels, format="FLAC", subtype="PCM_16") as handle:
        for _ in range(int(seconds)):
            handle.write(second)
    return str(path)


# VmHWM, not getrusage's ru_maxrss: Linux carries the parent's peak over into a child's
# ru_maxrss across fork and exec, so a child of a big test process would report that instead.
PEAK_RSS_SCRIPT = """
import sys
from pipelines.decode import audio
samples = audio.decode_with_soundfile(sys.argv[1], max_duration_s=600.0)
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(len(samples), peak_kb // 1024)
"""


@pytest.mark.slow
def test_decoding_memory_follows_the_output_not_the_file(tmp_path):
    """150 s of 8-channel 192 kHz FLAC (237 kB) is 922 MB as float32: read whole, the decode took
    1.06 GB; streamed in blocks it peaks at 57 MB here, imports included."""
    path = silent_flac(tmp_path / "wide.flac", 150)
    assert os.path.getsize(path) < 300_000
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_SCRIPT, path],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.split()
    n_samples, peak_mb = int(out[0]), int(out[1])
    assert n_samples == 150 * dsp.SAMPLE_RATE
    assert peak_mb < 120, (peak_mb, out)


@pytest.mark.slow
def test_a_file_past_the_decoded_samples_bound_is_refused_at_once(tmp_path):
    """600 s x 192 kHz x 8 channels of silence: under 1 MB on disk, 921.6 million samples."""
    path = silent_flac(tmp_path / "huge.flac", 600)
    assert os.path.getsize(path) < 1_000_000
    reason = (
        "too many samples to decode: 600.0 s x 192000 Hz x 8 channels is over the limit of 460800000 "
        "(lower --max-duration to decode less of each track)"
    )
    for decoder in ("soundfile", "auto"):  # final: auto does not hand it to ffmpeg
        start = time.monotonic()
        with pytest.raises(audio.DecodeLimit, match=f"^{re.escape(reason)}$"):
            audio.decode_audio(path, decoder=decoder)
        assert time.monotonic() - start < 5
    assert len(audio.decode_audio(path, decoder="soundfile", max_duration_s=30.0).samples) == 30 * dsp.SAMPLE_RATE
