"""Tests for infra/demo/catalog.py: the synthesized demo catalog and its audible tags.

The tag tests measure decoded audio with plain numpy (no model): each tag must move a simple
signal statistic in the direction its description promises, compared as group means over
36 tracks.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from infra.demo import catalog as demo_catalog
from model import dsp
from pipelines.decode.audio import decode_audio
from runtime.errors import TagscaleError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_TRACKS = 36
DURATION_S = 4.0
LOSSLESS = (".wav", ".flac")


def read_catalog(path):
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        return next(reader), list(reader)


def decode_all(rows):
    return [decode_audio(uri, decoder="ffmpeg").samples for _, uri, _ in rows]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """36 tracks of 4 s, seed 0: (catalog path, header, rows, decoded 16 kHz audio per row)."""
    out_dir = tmp_path_factory.mktemp("demo")
    path = demo_catalog.make_demo_catalog(str(out_dir), n_tracks=N_TRACKS, seed=0, duration_s=DURATION_S)
    header, rows = read_catalog(path)
    return path, header, rows, decode_all(rows)


def group_means(catalog, measure, tag, other=None):
    """Mean of ``measure`` over tracks with ``tag`` and over tracks with ``other`` (default: without ``tag``)."""
    _, _, rows, audio = catalog
    values = [measure(samples) for samples in audio]
    tagged = [value for (_, _, tags), value in zip(rows, values) if tag in tags.split(";")]
    rest = [
        value
        for (_, _, tags), value in zip(rows, values)
        if (other in tags.split(";") if other else tag not in tags.split(";"))
    ]
    assert len(tagged) >= 6 and len(rest) >= 6
    return np.mean(tagged), np.mean(rest)


def power_spectrogram(samples, *, n_fft=1024, hop=256):
    """(frames, n_fft // 2 + 1) Hann-windowed power, and the bin frequencies in Hz."""
    frames = np.lib.stride_tricks.sliding_window_view(samples, n_fft)[::hop] * np.hanning(n_fft)
    return np.abs(np.fft.rfft(frames, axis=1)) ** 2, np.fft.rfftfreq(n_fft, 1 / dsp.SAMPLE_RATE)


def low_energy_ratio(samples):
    """Share of a typical (median) frame's energy below 150 Hz; kick-drum thumps are too brief to count."""
    power, freqs = power_spectrogram(samples)
    return np.median(power[:, freqs < 150].sum(axis=1) / (power.sum(axis=1) + 1e-20))


def spectral_centroid(samples):
    power, freqs = power_spectrogram(samples)
    return power.sum(axis=0) @ freqs / power.sum()


def noisiness(samples):
    """Mean spectral flatness above 1 kHz: near 0 for tones, larger where noise bursts (drums) sound."""
    power, freqs = power_spectrogram(samples)
    band = power[:, freqs > 1000] + 1e-20
    return np.mean(np.exp(np.mean(np.log(band), axis=1)) / np.mean(band, axis=1))


def onset_rate(samples):
    """Onsets per second: peaks of spectral flux (dB) 1 dB over its 0.3 s running median, >= 80 ms apart."""
    hop = 128
    power, _ = power_spectrogram(samples, n_fft=512, hop=hop)
    level_db = 10 * np.log10(power + power.max() * 1e-8)
    flux = np.maximum(0.0, np.diff(level_db, axis=0)).mean(axis=1)
    half = int(0.15 * dsp.SAMPLE_RATE / hop)
    running = np.median(np.lib.stride_tricks.sliding_window_view(np.pad(flux, half, mode="edge"), 2 * half + 1), axis=1)
    is_peak = np.zeros(len(flux), bool)
    is_peak[1:-1] = (flux[1:-1] > flux[:-2]) & (flux[1:-1] >= flux[2:])
    onsets, last = 0, -np.inf
    for frame in np.flatnonzero(is_peak & (flux > running + 1.0)):
        if frame - last >= 0.08 * dsp.SAMPLE_RATE / hop:
            onsets, last = onsets + 1, frame
    return onsets / (len(samples) / dsp.SAMPLE_RATE)


def test_catalog_csv_has_header_ids_local_uris_and_known_tags(catalog):
    path, header, rows, _ = catalog
    assert header == ["track_id", "uri", "tags"]
    assert [row[0] for row in rows] == [f"demo-{i:05d}" for i in range(N_TRACKS)]
    audio_dir = os.path.join(os.path.dirname(path), "audio")
    for track_id, uri, tags in rows:
        assert os.path.isabs(uri) and os.path.isfile(uri)
        assert os.path.dirname(uri) == audio_dir and os.path.basename(uri).startswith(track_id + ".")
        tag_list = tags.split(";")
        assert tag_list == [tag for tag in demo_catalog.TAGS if tag in tag_list]  # known, in TAGS order, no repeats
        assert 1 <= len(set(tag_list) & set(demo_catalog.INSTRUMENTS)) <= 2
        assert ("fast" in tag_list) != ("slow" in tag_list)
        assert not {"bright", "dark"} <= set(tag_list)
    assert sorted(os.listdir(audio_dir)) == sorted(os.path.basename(uri) for _, uri, _ in rows)


def test_every_tag_is_on_a_fair_share_of_tracks(catalog):
    _, _, rows, _ = catalog
    counts = {tag: sum(tag in tags.split(";") for _, _, tags in rows) for tag in demo_catalog.TAGS}
    assert all(0.2 * N_TRACKS <= count <= 0.6 * N_TRACKS for count in counts.values()), counts
    assert 4.0 <= np.mean([len(tags.split(";")) for _, _, tags in rows]) <= 5.5
    assert set(demo_catalog.TAGS) == set(demo_catalog.TAG_SOUNDS) and len(demo_catalog.TAGS) == 11


def test_files_mix_formats_sample_rates_and_channels(catalog):
    _, _, rows, _ = catalog
    infos = {uri: soundfile.info(uri) for _, uri, _ in rows}
    expected_format = {".wav": "WAV", ".flac": "FLAC", ".mp3": "MP3", ".ogg": "OGG"}
    for uri, info in infos.items():
        assert info.format == expected_format[os.path.splitext(uri)[1]]
    assert {os.path.splitext(uri)[1] for uri in infos} == set(expected_format)
    assert {info.subtype for uri, info in infos.items() if uri.endswith(".wav")} == {"PCM_16"}
    assert {info.subtype for uri, info in infos.items() if uri.endswith(".ogg")} == {"VORBIS"}
    assert {info.samplerate for info in infos.values()} == set(demo_catalog.SAMPLE_RATES)
    assert {info.channels for info in infos.values()} == {1, 2}


def test_every_file_decodes_with_ffmpeg_to_the_requested_duration(catalog):
    _, _, rows, audio = catalog
    for (_, uri, _), samples in zip(rows, audio):
        assert abs(len(samples) / dsp.SAMPLE_RATE - DURATION_S) < 0.05, uri
        assert np.all(np.isfinite(samples))
        peak = np.abs(samples).max()
        assert 10 ** (-30 / 20) < peak <= 10 ** (-2 / 20), (uri, peak)  # -20..-3 dBFS, less after a stereo downmix


def test_same_seed_gives_same_catalog_and_audio_other_seed_differs(tmp_path):
    first = demo_catalog.make_demo_catalog(str(tmp_path / "a"), n_tracks=8, seed=7, duration_s=3.0, workers=2)
    with open(first, "rb") as handle:
        first_bytes = handle.read()
    _, rows = read_catalog(first)
    first_audio = decode_all(rows)

    again = demo_catalog.make_demo_catalog(str(tmp_path / "a"), n_tracks=8, seed=7, duration_s=3.0, workers=1)
    with open(again, "rb") as handle:
        assert handle.read() == first_bytes
    again_audio = decode_all(rows)
    assert any(uri.endswith(LOSSLESS) for _, uri, _ in rows)
    for (_, uri, _), one, two in zip(rows, first_audio, again_audio):
        np.testing.assert_array_equal(one, two, err_msg=uri)  # lossless and lossy alike

    other = demo_catalog.make_demo_catalog(str(tmp_path / "b"), n_tracks=8, seed=8, duration_s=3.0)
    _, other_rows = read_catalog(other)
    assert [tags for _, _, tags in other_rows] != [tags for _, _, tags in rows]
    other_audio = decode_all(other_rows)
    assert not any(
        len(one) == len(two) and np.allclose(one, two, atol=1e-3) for one, two in zip(first_audio, other_audio)
    )


def test_rerun_with_fewer_tracks_removes_the_stale_files(tmp_path):
    demo_catalog.make_demo_catalog(str(tmp_path), n_tracks=5, seed=1, duration_s=3.0)
    (tmp_path / "audio" / "notes.txt").write_text("not a track")
    _, rows = read_catalog(demo_catalog.make_demo_catalog(str(tmp_path), n_tracks=2, seed=1, duration_s=3.0))
    assert sorted(os.listdir(tmp_path / "audio")) == sorted(
        [os.path.basename(uri) for _, uri, _ in rows] + ["notes.txt"]
    )


def test_bass_tracks_have_far_more_energy_below_150_hz(catalog):
    with_bass, without = group_means(catalog, low_energy_ratio, "bass")
    assert with_bass > 0.1 and with_bass > 10 * without, (with_bass, without)


def test_bright_tracks_have_a_higher_spectral_centroid_than_dark_ones(catalog):
    bright, dark = group_means(catalog, spectral_centroid, "bright", "dark")
    assert bright > 2.5 * dark, (bright, dark)
    _, others = group_means(catalog, spectral_centroid, "bright")
    _, not_dark = group_means(catalog, spectral_centroid, "dark")
    assert bright > others and dark < not_dark


def test_drum_tracks_are_noisier(catalog):
    drums, none = group_means(catalog, noisiness, "drums")
    assert drums > 2 * none, (drums, none)


def test_fast_tracks_have_a_higher_onset_rate_than_slow_ones(catalog):
    fast, slow = group_means(catalog, onset_rate, "fast", "slow")
    assert fast > 1.3 * slow, (fast, slow)


def test_main_writes_the_catalog(tmp_path, capsys):
    assert demo_catalog.main([str(tmp_path), "--tracks", "2", "--duration", "3", "--seed", "5"]) == 0
    header, rows = read_catalog(tmp_path / "catalog.csv")
    assert header == ["track_id", "uri", "tags"] and len(rows) == 2
    assert str(tmp_path / "catalog.csv") in capsys.readouterr().out


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"n_tracks": 0}, "--tracks"),
        ({"duration_s": 2.5}, "--duration"),
        ({"duration_s": 601.0}, "--duration"),
        ({"seed": -1}, "--seed"),
        ({"workers": 0}, "--workers"),
    ],
)
def test_bad_arguments_raise_a_user_error_naming_the_flag(tmp_path, kwargs, flag):
    with pytest.raises(TagscaleError, match=flag):
        demo_catalog.make_demo_catalog(str(tmp_path), **kwargs)
    assert not os.path.exists(tmp_path / "catalog.csv")


def test_non_numeric_flag_is_an_argparse_error(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        demo_catalog.main([str(tmp_path), "--tracks", "many"])
    assert exit_info.value.code == 2


def test_cli_prints_a_one_line_error_for_too_short_tracks(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "infra.cli", "demo-catalog", str(tmp_path), "--duration", "1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("tagscale demo-catalog: error: --duration must be between 3 and 600")
    assert result.stderr.count("\n") == 1


LONGEST_OGG_SCRIPT = """
import sys
from infra.demo import catalog as demo_catalog
plan = demo_catalog.TrackPlan(index=0, tags=("flute", "slow"), extension="ogg", sample_rate=48000, channels=2)
path = demo_catalog.write_track(plan, audio_dir=sys.argv[1], duration_s=demo_catalog.MAX_DURATION_S, seed=0)
with open("/proc/self/status") as status:
    print(path, next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) // 1024)
"""


@pytest.mark.slow
def test_the_longest_stereo_ogg_at_48_khz_is_written_and_reads_back(tmp_path):
    """libvorbis puts a whole write call's buffer on the stack: one call with 600 s of 48 kHz stereo
    killed the process with a segfault. Written in a child process, so a crash fails this test only."""
    result = subprocess.run(
        [sys.executable, "-c", LONGEST_OGG_SCRIPT, str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    path, peak_mb = result.stdout.split()
    # Every worker renders a whole track: 1.0 GB measured at this length (1.7 GB before the noise
    # floor was added in place).
    assert int(peak_mb) < 1200, peak_mb
    info = soundfile.info(path)
    assert (info.format, info.samplerate, info.channels) == ("OGG", 48000, 2)
    assert info.frames == demo_catalog.MAX_DURATION_S * 48000
    decoded = decode_audio(path, decoder="soundfile", max_duration_s=demo_catalog.MAX_DURATION_S).samples
    assert len(decoded) == demo_catalog.MAX_DURATION_S * dsp.SAMPLE_RATE
    assert 0.005 < np.abs(decoded).max() <= 1.0  # the flute is there, at its -20 to -3 dBFS peak


def _spawned_workers(pid):
    """The pids of ``pid``'s child processes started by multiprocessing's spawn."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            for child in handle.read().split():
                try:
                    with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                        if b"spawn_main" in cmdline.read():
                            found.append(int(child))
                except FileNotFoundError:
                    pass
    return found


def test_a_synthesis_worker_that_dies_is_one_line_and_exit_2(tmp_path):
    import signal
    import time

    process = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "demo-catalog", str(tmp_path), "--tracks", "4", "--duration", "120"]
        + ["--workers", "2"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (workers := _spawned_workers(process.pid)):
        assert process.poll() is None and time.monotonic() < deadline, "no synthesis worker started"
        time.sleep(0.05)
    os.kill(workers[0], signal.SIGKILL)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 2, err
    assert err.startswith("tagscale demo-catalog: error: a synthesis worker process died before finishing")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not os.path.exists(tmp_path / "catalog.csv")
