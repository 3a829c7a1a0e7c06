"""Reliability: bad input, injected faults, killed jobs and re-runs - nothing lost, nothing twice.

The catalog mixes good tracks with every kind of bad entry users send; featurize and tag must
each account for every row exactly once, in their output or their dead letter, with a
specific reason, without crashing or hanging.
"""
import os
import signal as os_signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile

from pipelines import audio, featurize, stages, tag

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NASTY_NAME = "a; rm -rf victim $(touch pwned) `touch pwned2`.flac"


def tone(seconds, rate, channels=1, seed=0):
    from conftest import synth_tone

    return synth_tone(seconds, rate, channels=channels, seed=seed)


@pytest.fixture(scope="module")
def nasty(tmp_path_factory):
    """A catalog of 6 good tracks and 14 bad or odd rows; returns (dir, catalog path, expectations)."""
    root = tmp_path_factory.mktemp("nasty")
    (root / "victim").write_text("must survive")
    rows, expected = [], {}  # expected: track_id -> "ok" or a dead-letter reason prefix

    def add(track_id, path, outcome):
        rows.append((track_id, str(path)))
        expected[track_id] = outcome

    formats = [("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III")]
    for i in range(6):
        ext, subtype = formats[i % 4]
        path = root / f"good{i}.{ext}"
        soundfile.write(path, tone(4.0 + i, 44100, channels=2, seed=i), 44100, subtype=subtype)
        add(f"good{i}", path, "ok")
    add("missing", root / "missing.mp3", "file not found")
    (root / "empty.mp3").write_bytes(b"")
    add("empty", root / "empty.mp3", "empty file")
    whole = (root / "good3.mp3").read_bytes()
    (root / "truncated.mp3").write_bytes(whole[: len(whole) // 2])
    add("truncated", root / "truncated.mp3", "ok")  # the decodable first half is used
    (root / "text.mp3").write_text("definitely not audio\n" * 40)
    add("text", root / "text.mp3", "ffmpeg failed")
    soundfile.write(root / "silence.wav", np.zeros(5 * 16000, np.float32), 16000)
    add("silence", root / "silence.wav", "silent")
    soundfile.write(root / "short.wav", tone(0.5, 22050), 22050)
    add("short", root / "short.wav", "too short")
    with soundfile.SoundFile(root / "two_hours.wav", "w", 8000, 1, "PCM_16") as handle:
        block = (tone(60.0, 8000) * 0.5).astype(np.float32)
        for _ in range(120):
            handle.write(block)
    add("two_hours", root / "two_hours.wav", "ok")
    soundfile.write(root / "eight_channels.wav", tone(4.0, 96000, channels=8), 96000, subtype="PCM_24")
    add("eight_channels", root / "eight_channels.wav", "ok")
    latin1 = os.fsencode(str(root)) + b"/caf\xe9.wav"
    soundfile.write(latin1, tone(4.0, 16000), 16000)
    add("non_utf8_name", os.fsdecode(latin1), "ok")
    os.mkfifo(root / "fifo.wav")
    add("fifo", root / "fifo.wav", "not a regular file")
    soundfile.write(root / NASTY_NAME, tone(4.0, 32000), 32000)
    add("shell_name", root / NASTY_NAME, "ok")
    add("directory", root, "is a directory")
    rows.append(("good0", str(root / "good1.flac")))  # duplicate track_id: the first row wins
    catalog = root / "catalog.csv"
    with open(catalog, "wb") as handle:  # bytes: the latin-1 file name is not valid UTF-8
        handle.write(b"track_id,uri,tags\n")
        for i, (track_id, path) in enumerate(rows):
            quoted = b'"' + os.fsencode(path).replace(b'"', b'""') + b'"'
            handle.write(track_id.encode() + b"," + quoted + (b",odd" if i % 2 else b",even") + b"\n")
    return root, catalog, expected, len(rows)


def check_accounting(dead_letter_dir, ok_ids, expected, n_rows):
    dead = pq.read_table(dead_letter_dir).to_pylist()
    dead_ids = [row["track_id"] for row in dead]
    assert len(ok_ids) + len(dead) == n_rows  # every row once: output or dead letter
    assert sorted(ok_ids) == sorted(t for t, outcome in expected.items() if outcome == "ok")
    reasons = {row["track_id"]: row["error"] for row in dead if not row["error"].startswith("duplicate")}
    for track_id, outcome in expected.items():
        if outcome != "ok":
            assert reasons[track_id].startswith(outcome), (track_id, reasons[track_id])
    assert [row for row in dead if row["error"].startswith("duplicate")][0]["track_id"] == "good0"
    assert len(set(dead_ids) - {"good0"}) == len(dead_ids) - 1


@pytest.mark.slow
def test_featurize_accounts_for_every_bad_row(nasty, tmp_path):
    root, catalog, expected, n_rows = nasty
    start = time.monotonic()
    metadata = featurize.run(["--catalog", str(catalog), "--output", str(tmp_path / "f"), "--max-duration", "20", "--timeout", "30", "--valid-fraction", "0", "--test-fraction", "0"])
    assert time.monotonic() - start < 120  # no hang on the FIFO or the two-hour file
    assert metadata["tracks_in"] == n_rows == metadata["tracks_ok"] + metadata["tracks_failed"]
    import tensorflow as tf

    from model import features

    spec = features.shard_feature_spec("mel", metadata["top_k"])
    files = [str(tmp_path / "f" / name) for name in metadata["files"]["mel"]["train"]]
    records = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(files)]
    ok_ids = sorted({r["track_id"].numpy().decode("utf-8", "replace") for r in records})
    check_accounting(tmp_path / "f" / "dead_letter", ok_ids, expected, n_rows)
    two_hours = [r for r in records if r["track_id"].numpy() == b"two_hours"]
    assert len(two_hours) == signal_patches(20.0)  # capped at --max-duration, not 2 hours
    assert (root / "victim").exists() and not (root / "pwned").exists() and not (root / "pwned2").exists()


def signal_patches(seconds):
    from model import dsp

    return dsp.n_patches(int(seconds * dsp.SAMPLE_RATE))


@pytest.mark.slow
def test_tag_accounts_for_every_bad_row(nasty, tmp_path):
    from test_tag import small_model_dir

    root, catalog, expected, n_rows = nasty
    summary = tag.run(["--catalog", str(catalog), "--model", small_model_dir(tmp_path), "--output", str(tmp_path / "t"), "--max-duration", "20", "--timeout", "30"])
    assert summary["tracks_in"] == n_rows == summary["tagged"] + summary["skipped"] + summary["failed"]
    rows = pq.read_table(tmp_path / "t" / "tags").to_pylist()
    check_accounting(tmp_path / "t" / "dead_letter", [r["track_id"] for r in rows], expected, n_rows)
    by_id = {r["track_id"]: r for r in rows}
    assert by_id["two_hours"]["duration_s"] == 20.0 and by_id["non_utf8_name"]["uri"].endswith("caf\ufffd.wav")


def test_unreadable_file_is_a_decode_error():
    """Root reads anything, so the check runs as the unprivileged user `nobody`."""
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o755)  # pytest's own tmp dirs are private to root
        path = os.path.join(directory, "locked.wav")
        soundfile.write(path, tone(2.0, 16000), 16000)
        os.chmod(path, 0)
        check_permission_denied(path)


def check_permission_denied(path):
    """Decode ``path`` in a forked child that drops to uid/gid 65534 (nobody) when run as root.

    The child needs no file access but ``path`` (the modules are already in memory), so it works
    wherever the checkout and the virtualenv live.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            try:
                audio.decode_audio(path)
                message = "decoded"
            except audio.DecodeError as error:
                message = str(error)
            os.write(write_end, message.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as handle:
        assert handle.read().decode() == f"permission denied: {path}"


@pytest.fixture(scope="module")
def forty_tracks(tmp_path_factory):
    root = tmp_path_factory.mktemp("forty")
    lines = ["track_id,uri,tags"]
    for i in range(40):
        path = root / f"t{i:02d}.wav"
        soundfile.write(path, tone(3.5, 16000, seed=i), 16000)
        lines.append(f"t{i:02d},{path},{'a' if i % 2 else 'b'}")
    (root / "catalog.csv").write_text("\n".join(lines) + "\n")
    return root / "catalog.csv"


@pytest.mark.slow
def test_transient_decode_faults_are_retried_and_change_nothing(forty_tracks, tmp_path, monkeypatch):
    from test_tag import small_model_dir

    hit = [f"t{i:02d}" for i in range(40) if stages.injected_fault(f"t{i:02d}", 0.05)]
    assert hit, "the 5% hook must select at least one of these tracks"
    model = small_model_dir(tmp_path)
    clean = tag.run(["--catalog", str(forty_tracks), "--model", model, "--output", str(tmp_path / "clean")])
    monkeypatch.setenv(stages.FAULT_ENV, "0.05")
    faulty = tag.run(["--catalog", str(forty_tracks), "--model", model, "--output", str(tmp_path / "faulty")])
    assert clean["tagged"] == faulty["tagged"] == 40 and faulty["failed"] == 0
    read = lambda d: pq.read_table(d / "tags").to_pandas().sort_values("track_id").reset_index(drop=True)
    assert read(tmp_path / "clean").to_json() == read(tmp_path / "faulty").to_json()


def test_a_fault_that_persists_ends_in_the_dead_letter(monkeypatch):
    from pipelines.catalog import Track

    def always_transient(*args, **kwargs):
        raise audio.TransientError("connection reset")

    monkeypatch.setattr(audio, "decode_audio", always_transient)
    monkeypatch.setattr(time, "sleep", lambda _: None)
    fn = stages._DecodeFn(stages.DecodeOptions())
    fn.setup()
    (out,) = list(fn.process(Track("x", "gs://b/x.mp3")))
    assert out.tag == "dead_letter" and out.value["error"] == "gave up after 3 attempts: connection reset"


@pytest.mark.slow
def test_killed_tag_run_then_incremental_tags_every_track_once(forty_tracks, tmp_path):
    from test_tag import small_model_dir

    model = small_model_dir(tmp_path)
    output = tmp_path / "out"
    command = [sys.executable, "-m", "pipelines.tag", "--catalog", str(forty_tracks), "--model", model, "--output", str(output), "--incremental", "--batch-size", "2", "--progress-every", "0.2"]
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:  # kill as soon as tracks are coming out of the model
        if "tracks through the model" in line:
            process.send_signal(os_signal.SIGKILL)
            break
    process.wait(timeout=120)
    assert process.returncode == -os_signal.SIGKILL
    assert not list((output / "tags").glob("*.parquet")) if (output / "tags").exists() else True  # partial output never counts
    summary = tag.run(command[3:])
    assert summary["tagged"] + summary["skipped"] == 40
    ids = pq.read_table(output / "tags").column("track_id").to_pylist()
    assert sorted(ids) == [f"t{i:02d}" for i in range(40)]  # each exactly once


@pytest.mark.slow
def test_featurize_twice_gives_identical_shards_and_metadata(forty_tracks, tmp_path):
    import json

    outputs = []
    for name in ("one", "two"):
        featurize.run(["--catalog", str(forty_tracks), "--output", str(tmp_path / name)])
        outputs.append(tmp_path / name)
    meta = [json.loads((o / "metadata.json").read_text()) for o in outputs]
    for m in meta:
        m["config"].pop("output")
    assert meta[0] == meta[1]
    for kind in ("mel", "waveform"):
        files = [sorted(p.name for p in (o / kind).iterdir()) for o in outputs]
        # 3 splits x 1 shard (40 short tracks are far below the default shard size)
        assert files[0] == files[1] == sorted(name.split("/")[1] for name in sum(meta[0]["files"][kind].values(), [])) and len(files[0]) == 3
        for name in files[0]:
            assert (outputs[0] / kind / name).read_bytes() == (outputs[1] / kind / name).read_bytes(), (kind, name)
