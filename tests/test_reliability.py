"""Reliability: bad input, injected faults, killed jobs and re-runs - nothing lost, nothing twice.

The catalog mixes good tracks with every kind of bad entry users send; featurize and tag must
each account for every row exactly once, in their output or their dead letter, with a
specific reason, without crashing or hanging.
"""

import json
import os
import signal as os_signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile

from pipelines import buckets, featurize, stages, tag
from pipelines.decode import audio
from runfolder import manifest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NASTY_NAME = "a; rm -rf victim $(touch pwned) `touch pwned2`.flac"


def tone(seconds, rate, channels=1, seed=0):
    from made import synth_tone

    return synth_tone(seconds, rate, channels=channels, seed=seed)


@pytest.fixture(scope="module")
def nasty(tmp_path_factory):
    """A catalog of 6 good tracks and 15 bad or odd rows; returns (dir, catalog path, expectations)."""
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
    # A track_id that is not valid UTF-8 (the catalog is decoded with surrogateescape): it
    # cannot be written as UTF-8, so it is a catalog dead letter, not a crash at encode time.
    rows.append(("bad\udcffid", str(root / "good0.wav")))
    expected["bad\ufffdid"] = f"row {len(rows)}: track_id is not valid UTF-8"
    rows.append(("good0", str(root / "good1.flac")))  # duplicate track_id: the first row wins
    catalog = root / "catalog.csv"
    with open(catalog, "wb") as handle:  # bytes: the latin-1 file name is not valid UTF-8
        handle.write(b"track_id,uri,tags\n")
        for i, (track_id, path) in enumerate(rows):
            quoted = b'"' + os.fsencode(path).replace(b'"', b'""') + b'"'
            handle.write(
                track_id.encode("utf-8", "surrogateescape") + b"," + quoted + (b",odd" if i % 2 else b",even") + b"\n"
            )
    return root, catalog, expected, len(rows)


def check_accounting(output, ok_ids, expected, n_rows):
    files = manifest.dead_letter_files(str(output))  # through the run's dead-letter manifest
    assert sorted(path.rsplit("/", 1)[-1] for path in files) == sorted(
        p.name for p in (output / "dead_letter").glob("*.parquet")
    )
    dead = pq.read_table(files).to_pylist()
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
    metadata = featurize.run(
        [
            "--catalog",
            str(catalog),
            "--output",
            str(tmp_path / "f"),
            "--max-duration",
            "20",
            "--timeout",
            "30",
            "--valid-fraction",
            "0",
            "--test-fraction",
            "0",
        ]
    )
    assert time.monotonic() - start < 120  # no hang on the FIFO or the two-hour file
    assert metadata["tracks_in"] == n_rows == metadata["tracks_ok"] + metadata["tracks_failed"]
    import tensorflow as tf

    from model import features

    spec = features.shard_feature_spec("mel", metadata["top_k"])
    files = [str(tmp_path / "f" / name) for name in metadata["files"]["mel"]["train"]]
    records = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(files)]
    ok_ids = sorted({r["track_id"].numpy().decode("utf-8", "replace") for r in records})
    check_accounting(tmp_path / "f", ok_ids, expected, n_rows)
    two_hours = [r for r in records if r["track_id"].numpy() == b"two_hours"]
    assert len(two_hours) == signal_patches(20.0)  # capped at --max-duration, not 2 hours
    assert (root / "victim").exists() and not (root / "pwned").exists() and not (root / "pwned2").exists()


def signal_patches(seconds):
    from model import dsp

    return dsp.n_patches(int(seconds * dsp.SAMPLE_RATE))


@pytest.mark.slow
def test_tag_accounts_for_every_bad_row(nasty, tmp_path):
    from made import small_model_dir

    root, catalog, expected, n_rows = nasty
    summary = tag.run(
        [
            "--catalog",
            str(catalog),
            "--model",
            small_model_dir(tmp_path),
            "--output",
            str(tmp_path / "t"),
            "--max-duration",
            "20",
            "--timeout",
            "30",
        ]
    )
    assert summary["tracks_in"] == n_rows == summary["tagged"] + summary["skipped"] + summary["failed"]
    rows = pq.read_table(manifest.tag_files(str(tmp_path / "t"))).to_pylist()
    check_accounting(tmp_path / "t", [r["track_id"] for r in rows], expected, n_rows)
    by_id = {r["track_id"]: r for r in rows}
    assert by_id["two_hours"]["duration_s"] == 20.0 and by_id["non_utf8_name"]["uri"].endswith("caf\ufffd.wav")


@pytest.mark.root
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
    """The first decode of about 5% of the tracks (chosen by a stable hash of the file) fails
    with a TransientError; the retries give output identical to the bit to a clean run."""
    from made import small_model_dir

    decode, failed_once = audio.decode_audio, []

    def flaky_decode(uri, **kwargs):
        if buckets.unit_hash(os.path.basename(uri), "fault:") < 0.05 and uri not in failed_once:
            failed_once.append(uri)
            raise audio.TransientError("injected fault")
        return decode(uri, **kwargs)

    model = small_model_dir(tmp_path)
    clean = tag.run(["--catalog", str(forty_tracks), "--model", model, "--output", str(tmp_path / "clean")])
    monkeypatch.setattr(audio, "decode_audio", flaky_decode)
    # In-process workers, so that they call the patched decoder.
    faulty = tag.run(
        ["--catalog", str(forty_tracks), "--model", model, "--output", str(tmp_path / "faulty")]
        + ["--direct_running_mode=in_memory"]
    )
    assert failed_once, "the 5% hook must select at least one of these tracks"
    assert clean["tagged"] == faulty["tagged"] == 40 and faulty["failed"] == 0
    assert tag_rows_as_bits(tmp_path / "clean") == tag_rows_as_bits(tmp_path / "faulty")


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


def tag_rows_as_bits(output):
    """The tag output read through its manifest, one row per track in track_id order, with
    every score and embedding value as the bits of its float32, so re-runs compare exactly."""
    rows = sorted(pq.read_table(manifest.tag_files(str(output))).to_pylist(), key=lambda row: row["track_id"])
    for row in rows:
        row["scores"] = [(s["tag"], int(np.float32(s["score"]).view(np.uint32))) for s in row["scores"]]
        row["embedding"] = np.asarray(row["embedding"], np.float32).view(np.uint32).tolist()
    return rows


def catalog_head(catalog, n, path):
    lines = catalog.read_text().splitlines()
    path.write_text("\n".join(lines[: n + 1]) + "\n")
    return path


@pytest.mark.slow
def test_tag_killed_in_the_parquet_sink_keeps_the_old_output_and_incremental_tags_the_rest(forty_tracks, tmp_path):
    """Old output: 25 tracks. A full run of all 40 is paused inside its Parquet writer after a
    row group is written (tests/pause_in_sink, put on the run's PYTHONPATH; the marker proves
    where), a second run is refused while it holds the output, then it is killed: the 25-track
    output is untouched, its stale lock is taken over with a message, and --incremental tags
    exactly the 15 others."""
    from made import small_model_dir

    model = small_model_dir(tmp_path)
    output = tmp_path / "out"
    tag.run(
        [
            "--catalog",
            str(catalog_head(forty_tracks, 25, tmp_path / "first25.csv")),
            "--model",
            model,
            "--output",
            str(output),
        ]
    )
    listed = (output / "tags" / "manifest.json").read_bytes()
    before = tag_rows_as_bits(output)
    assert len(before) == 25

    marker = tmp_path / "in_sink"
    command = [
        sys.executable,
        "-m",
        "pipelines.tag",
        "--catalog",
        str(forty_tracks),
        "--model",
        model,
        "--output",
        str(output),
        "--batch-size",
        "4",
    ]
    hook = os.path.join(REPO, "tests", "pause_in_sink")
    env = {**os.environ, "TAGSCALE_TEST_PAUSE_MARKER": str(marker), "PYTHONPATH": f"{hook}{os.pathsep}{REPO}"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), f"the run never reached the Parquet sink (exit {process.poll()})"
        temp_file = marker.read_text().split("writing ", 1)[1].strip()
        assert os.path.exists(temp_file) and "/.tagscale-staging-" in temp_file and "/tags/run-" in temp_file

        second = subprocess.run(
            command, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, text=True, timeout=300
        )
        assert second.returncode == 2
        (line,) = second.stderr.strip().splitlines()[-1:]
        assert (
            line.startswith("tagscale tag: error: ")
            and f"pid {process.pid}," in line
            and "in use by tagscale tag on host" in line
        )
    finally:
        process.send_signal(os_signal.SIGKILL)
        process.wait(timeout=60)
    assert (output / "tags" / "manifest.json").read_bytes() == listed
    assert tag_rows_as_bits(output) == before  # the old output, intact and readable

    result = subprocess.run(
        command + ["--incremental"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        "taking over the stale lock of tagscale tag on host" in result.stderr and f"pid {process.pid}," in result.stderr
    )
    summary = json.loads((output / "summary.json").read_text())
    assert (summary["tagged"], summary["skipped"], summary["failed"]) == (15, 25, 0)
    after = tag_rows_as_bits(output)
    assert [row["track_id"] for row in after] == [f"t{i:02d}" for i in range(40)]  # each exactly once
    assert [row for row in after if row["track_id"] < "t25"] == before
    assert not [
        name for name in os.listdir(output) if name.startswith(".tagscale-staging-")
    ]  # the killed run's staging is gone


@pytest.fixture
def small_filesystem(tmp_path):
    """A 4 MiB tmpfs (root can mount one); None where it cannot be made."""
    mount_point = tmp_path / "small_fs"
    mount_point.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True)
    if made.returncode != 0:
        yield None
        return
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory, leave_bytes):
    """Fill the filesystem of ``directory`` until ``leave_bytes`` are free."""
    stats = os.statvfs(directory)
    free = stats.f_bavail * stats.f_frsize
    with open(directory / "filler", "wb") as handle:
        handle.write(b"\0" * max(free - leave_bytes, 0))


@pytest.mark.slow
def test_tag_run_that_runs_out_of_space_leaves_the_previous_output(
    forty_tracks, tmp_path, small_filesystem, monkeypatch
):
    from made import small_model_dir

    model = small_model_dir(tmp_path)
    if small_filesystem is not None:
        output = small_filesystem / "out"
    else:  # no tmpfs: every write of the Parquet sink fails as a full disk would
        output = tmp_path / "out"
    tag.run(
        [
            "--catalog",
            str(catalog_head(forty_tracks, 5, tmp_path / "first5.csv")),
            "--model",
            model,
            "--output",
            str(output),
        ]
    )
    before, listed = tag_rows_as_bits(output), (output / "tags" / "manifest.json").read_bytes()
    if small_filesystem is not None:
        fill(small_filesystem, 12 * 1024)
    else:
        import errno

        import pyarrow.parquet as pq

        def full(self, table, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    with pytest.raises(Exception, match="No space left on device") as failure:
        tag.run(["--catalog", str(forty_tracks), "--model", model, "--output", str(output)])
    assert "while running 'WriteTags/" in str(failure.value)  # the Parquet sink hit the full disk
    assert (output / "tags" / "manifest.json").read_bytes() == listed
    assert tag_rows_as_bits(output) == before and len(before) == 5
    assert sorted(name for name in os.listdir(output) if name.startswith(".tagscale")) == [
        ".tagscale-owned",
        ".tagscale.lock",
    ]


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
        files = [
            sorted(p.name for p in (o / kind).glob("*.tfrecord")) for o in outputs
        ]  # beside them: the ownership marker
        # 3 splits x 1 shard (40 short tracks are far below the default shard size)
        assert (
            files[0] == files[1] == sorted(name.split("/")[1] for name in sum(meta[0]["files"][kind].values(), []))
            and len(files[0]) == 3
        )
        for name in files[0]:
            assert (outputs[0] / kind / name).read_bytes() == (outputs[1] / kind / name).read_bytes(), (kind, name)
