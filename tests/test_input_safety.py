"""Bad input that used to crash or hang: non-UTF-8 track_ids and tags, oversized files, an
in-process decoder that runs too long, and a bad catalog given to `python -m pipelines.*`."""

import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile

from pipelines import catalog
from pipelines.decode import audio
from pipelines.decode import helper as decode_worker

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tone(seconds, rate, channels=1, seed=0):
    from made import synth_tone

    return synth_tone(seconds, rate, channels=channels, seed=seed)


def test_non_utf8_track_ids_and_tags_go_to_the_dead_letter(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_bytes(
        b"track_id,uri,tags\n"
        b"good,/a/caf\xe9.wav,rock\n"  # a non-UTF-8 file name is fine: it is only opened
        b"bad\xffid,/a/b.wav,rock\n"
        b"badtag,/a/c.wav,rock;\xfe\xfe\n"
    )
    out = list(catalog.parse_rows(str(path)))
    tracks = [item for item in out if not hasattr(item, "tag")]
    dead = {item.value["track_id"]: item.value for item in out if hasattr(item, "tag")}
    assert [track_id for track_id, _ in tracks] == ["good"]
    assert os.fsencode(tracks[0][1][1].uri) == b"/a/caf\xe9.wav"
    assert dead["bad\ufffdid"]["error"] == "row 2: track_id is not valid UTF-8 (byte 3): b'bad\\xffid'"
    assert dead["badtag"]["error"].startswith("row 3: tag is not valid UTF-8")
    assert all(item.value["stage"] == "catalog" for item in out if hasattr(item, "tag"))


def test_bytes_from_a_parquet_catalog_are_checked_too():
    with pytest.raises(catalog.BadRow, match="track_id is not valid UTF-8"):
        catalog.to_track({"track_id": b"\xc3\x28", "uri": "/a.wav"})
    assert catalog.to_track({"track_id": "caf\u00e9".encode(), "uri": "/a.wav", "tags": [b"rock"]}).tags == ("rock",)


def test_a_file_over_max_bytes_is_refused(tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone(4.0, 16000), 16000)
    size = path.stat().st_size
    for decoder in ("soundfile", "ffmpeg", "auto"):
        with pytest.raises(audio.DecodeError, match=f"file is {size} bytes, over --max-bytes 1000"):
            audio.decode_audio(str(path), decoder=decoder, max_bytes=1000)
    assert audio.decode_audio(str(path), max_bytes=size).duration_s == 4.0


def test_a_libsndfile_decode_past_its_timeout_is_killed(tmp_path):
    """60 s of 48 kHz stereo FLAC takes libsndfile + soxr most of a second here; with a 10 ms
    timeout its helper process is killed, the caller gets a dead-letter reason at once, and the
    next decode runs in a fresh helper."""
    short, long = tmp_path / "short.wav", tmp_path / "long.flac"
    soundfile.write(short, tone(2.0, 16000), 16000)
    soundfile.write(long, tone(60.0, 48000, channels=2), 48000)
    audio.decode_audio(str(short), decoder="soundfile")  # start this thread's helper
    helper = decode_worker._local.worker.process
    start = time.monotonic()
    with pytest.raises(audio.DecodeError, match=r"^soundfile timed out after 0.01 s$"):
        audio.decode_audio(str(long), decoder="auto", timeout_s=0.01)  # a timeout is final: no ffmpeg fallback
    assert time.monotonic() - start < 0.5
    assert helper.poll() is not None  # killed, not left running
    decoded = audio.decode_audio(str(long), decoder="soundfile", timeout_s=60)
    np.testing.assert_array_equal(decoded.samples, audio.decode_with_soundfile(str(long), max_duration_s=600.0))


HELPER_CPU_SCRIPT = """
import os, resource, sys
from pipelines.decode import audio, helper as decode_worker
for _ in range(6):
    audio.decode_audio(sys.argv[1], decoder="soundfile")
pid = decode_worker._local.worker.process.pid
with open(f"/proc/{pid}/stat") as stat:
    fields = stat.read().rsplit(")", 1)[1].split()
helper = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
own = resource.getrusage(resource.RUSAGE_SELF)
print(pid, helper, own.ru_utime + own.ru_stime)
"""


def test_the_decode_helper_is_reaped_so_its_cpu_is_billed_to_the_run(tmp_path):
    """Without reaping at exit the helper is adopted by init and its decoding vanishes from
    the run's CPU time (what `time` and the benchmarks read)."""
    long = tmp_path / "long.flac"
    soundfile.write(long, tone(60.0, 48000, channels=2), 48000)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [sys.executable, "-c", HELPER_CPU_SCRIPT, str(long)], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.split()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    pid, helper_cpu, own_cpu = int(out[0]), float(out[1]), float(out[2])
    billed = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert helper_cpu > 0.3  # six decodes of 60 s of 48 kHz stereo FLAC + soxr: 0.5 s measured
    assert billed >= own_cpu + helper_cpu - 0.05
    assert not os.path.exists(f"/proc/{pid}")


@pytest.mark.slow
def test_gcs_audio_is_streamed_under_the_cap(tmp_path):
    from gcs_emulator import running_emulator

    local = tmp_path / "tone.flac"
    soundfile.write(local, tone(6.0, 22050, channels=2), 22050, format="FLAC")
    size = local.stat().st_size
    with running_emulator("capped") as client:
        client.bucket("capped").blob("a/tone.flac").upload_from_filename(str(local))
        uri = "gs://capped/a/tone.flac"
        for decoder in ("soundfile", "ffmpeg"):
            with pytest.raises(audio.DecodeError, match=f"over --max-bytes {size - 1}"):
                audio.decode_audio(uri, decoder=decoder, max_bytes=size - 1)
            remote = audio.decode_audio(uri, decoder=decoder, max_bytes=size).samples
            np.testing.assert_array_equal(remote, audio.decode_audio(str(local), decoder=decoder).samples)


@pytest.mark.slow
@pytest.mark.parametrize("module", ["pipelines.featurize", "pipelines.tag"])
def test_python_m_entry_points_report_a_bad_catalog_in_one_line(module, tmp_path):
    bad = tmp_path / "catalog.csv"
    bad.write_text("id,path\nx,/a.wav\n")
    (tmp_path / "model").mkdir()
    args = ["--catalog", str(bad), "--output", str(tmp_path / "out")] + (
        ["--model", str(tmp_path / "model")] if module.endswith("tag") else []
    )
    env = {**os.environ, "PYTHONPATH": REPO}
    direct = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    command = module.split(".")[1]
    via_cli = subprocess.run(
        [sys.executable, "-m", "infra.cli", command, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    expected = f"tagscale {command}: error: {bad}: CSV header must be track_id,uri[,tags][,split]; got id,path"
    for result in (direct, via_cli):
        assert result.returncode == 2
        assert [line for line in result.stderr.splitlines() if "cuInit" not in line and "cuda" not in line.lower()] == [
            expected
        ]


def response_pipe(data: bytes) -> int:
    """A readable fd holding ``data`` then EOF, as if a helper had written it and exited."""
    read_end, write_end = os.pipe()
    os.write(write_end, data)
    os.close(write_end)
    return read_end


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_the_response_parser_takes_only_samples_or_a_reason(tmp_path, monkeypatch):
    """What the helper writes is data: a pickle is never run, an unknown status or an
    impossible length is a malformed response, and a length is checked before it is read."""
    import pickle
    import struct

    monkeypatch.chdir(tmp_path)
    evil = pickle.dumps(_Payload())
    frame = struct.Struct("<BQ")
    old_style = struct.pack("<Q", len(evil)) + evil  # the format the helper used to speak
    with pytest.raises(decode_worker.MalformedResponse):
        decode_worker.read_response(response_pipe(old_style), None, max_samples=1000)
    padded = evil + b"\0" * (-len(evil) % 4)
    samples = decode_worker.read_response(response_pipe(frame.pack(0, len(padded)) + padded), None, 1000)
    assert samples.dtype == np.float32 and samples.tobytes() == padded  # just numbers
    assert not (tmp_path / "pwned").exists()
    cases = [
        frame.pack(9, 4) + b"abcd",  # no such status
        frame.pack(0, 6) + b"abcdef",  # not whole float32 samples
        frame.pack(0, 1 << 60),  # more samples than the request can yield: refused unread
        frame.pack(1, 1 << 40),  # a reason longer than any reason
    ]
    for data in cases:
        with pytest.raises(decode_worker.MalformedResponse):
            decode_worker.read_response(response_pipe(data), None, max_samples=1000)
    reason = "soundfile failed: caf\u00e9".encode()
    for status, error in ((1, audio.DecodeError), (2, audio.DecodeLimit), (3, audio.TransientError)):
        with pytest.raises(error, match="^soundfile failed: caf\u00e9$"):
            decode_worker.read_response(response_pipe(frame.pack(status, len(reason)) + reason), None, 1000)
    exact = np.array([0.1, -0.0, 1e-42, np.pi], np.float32)
    got = decode_worker.read_response(response_pipe(frame.pack(0, 16) + exact.tobytes()), None, 4)
    assert got.view(np.uint32).tolist() == exact.view(np.uint32).tolist()


def test_the_parent_never_unpickles_and_the_helper_gives_the_same_bits(tmp_path, monkeypatch, real_clips):
    import inspect
    import pickle

    source = inspect.getsource(decode_worker)
    assert "import pickle" not in source and "pickle." not in source

    def refuse(*args, **kwargs):
        raise AssertionError("the parent unpickled what the decode helper wrote")

    for name in ("loads", "load", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    decode_worker.close_all()  # a fresh helper, started under the patch
    stereo = tmp_path / "stereo.flac"
    soundfile.write(stereo, tone(7.0, 44100, channels=2), 44100)
    for path in (str(stereo), str(real_clips[0])):
        helper = audio.decode_audio(path, decoder="soundfile").samples
        in_process = audio.decode_with_soundfile(path, max_duration_s=600.0)
        assert helper.view(np.uint32).tolist() == in_process.view(np.uint32).tolist()
    (tmp_path / "text.wav").write_text("not audio " * 100)
    with pytest.raises(audio.DecodeError, match="^soundfile failed: "):
        audio.decode_audio(str(tmp_path / "text.wav"), decoder="soundfile")
