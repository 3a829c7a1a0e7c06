"""Output safety without a pipeline: refused outputs, ownership markers, publish and its
roll-forward after a crash, and the one-run-per-output lock (live holder, killed holder)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipelines.catalog_checks import audio_uris
from pipelines.storage import locks, outputs, ownership, publish
from runtime.errors import TagscaleError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _audio(catalog):
    """The catalog's audio, as featurize and tag give it to the output check."""
    return audio_uris(str(catalog))


@pytest.fixture
def catalog(tmp_path):
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "a.wav").write_bytes(b"RIFF")
    path = tmp_path / "lists" / "catalog.csv"
    path.parent.mkdir()
    path.write_text(f"track_id,uri,tags\na,{tmp_path / 'audio' / 'a.wav'},x\n")
    return path


def test_refuses_a_root_the_audio_and_the_catalog(catalog, tmp_path):
    def check(output):
        return outputs.check_output(str(output), catalog=str(catalog), catalog_audio=_audio(catalog), entries=("tags",))

    with pytest.raises(outputs.OutputError, match="is a filesystem root"):
        check("/")
    with pytest.raises(outputs.OutputError, match="is a filesystem root"):
        check("gs://some-bucket/")
    with pytest.raises(outputs.OutputError, match="contains the catalog"):
        check(tmp_path)  # the parent of the catalog and the audio
    with pytest.raises(outputs.OutputError, match="contains the catalog's audio"):
        check(tmp_path / "audio")  # the audio directory itself
    with pytest.raises(outputs.OutputError, match="contains the catalog"):
        check(catalog.parent)
    check(tmp_path / "out")  # beside them is fine


def test_refuses_to_replace_or_delete_what_tagscale_did_not_make(catalog, tmp_path):
    output = tmp_path / "out"
    (output / "tags").mkdir(parents=True)
    (output / "tags" / "precious.parquet").write_bytes(b"mine")
    with pytest.raises(outputs.OutputError, match="was not made by tagscale"):
        outputs.check_output(str(output), catalog=str(catalog), catalog_audio=_audio(catalog), entries=("tags",))
    with pytest.raises(outputs.OutputError, match="refusing to delete it"):
        ownership.delete_owned(str(output / "tags"))
    assert (output / "tags" / "precious.parquet").read_bytes() == b"mine"
    ownership.mark(str(output / "tags"))
    outputs.check_output(str(output), catalog=str(catalog), catalog_audio=_audio(catalog), entries=("tags",))
    ownership.delete_owned(str(output / "tags"))
    assert not (output / "tags").exists()


def stage(output, run_id, content):
    staging = publish.Staging(str(output), run_id).create()
    os.makedirs(staging.path("tags"))
    with open(staging.path("tags", f"{content}.parquet"), "w") as handle:
        handle.write(content)
    with open(staging.path("summary.json"), "w") as handle:
        handle.write(json.dumps({"run": content}))
    return staging


def test_publish_replaces_entries_and_leaves_nothing_behind(tmp_path):
    output = tmp_path / "out"
    stage(output, "r1", "first").publish(["tags", "summary.json"])
    stage(output, "r2", "second").publish(["tags", "summary.json"])
    assert sorted(os.listdir(output / "tags")) == [outputs.MARKER, "second.parquet"]  # no file of run 1
    assert json.loads((output / "summary.json").read_text()) == {"run": "second"}
    assert sorted(os.listdir(output)) == [outputs.MARKER, "summary.json", "tags"]


def test_a_publish_killed_half_way_is_finished_by_recover(tmp_path, monkeypatch):
    output = tmp_path / "out"
    stage(output, "r1", "first").publish(["tags", "summary.json"])
    staging = stage(output, "r2", "second")
    renames = []
    real_rename = os.rename

    def crash_after_two(source, target):  # the old tags moved aside, the new ones not yet in place
        if len(renames) == 1:
            raise KeyboardInterrupt("killed")
        renames.append(target)
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        staging.publish(["tags", "summary.json"])
    monkeypatch.setattr(os, "rename", real_rename)
    assert not (output / "tags").exists() and (output / publish.JOURNAL).exists()
    publish.recover(str(output))
    assert sorted(os.listdir(output / "tags")) == [outputs.MARKER, "second.parquet"]
    assert json.loads((output / "summary.json").read_text()) == {"run": "second"}
    assert sorted(os.listdir(output)) == [outputs.MARKER, "summary.json", "tags"]


def test_recover_deletes_the_staging_of_a_run_that_died(tmp_path):
    output = tmp_path / "out"
    stage(output, "r1", "first").publish(["tags"])
    stage(output, "dead", "never-published")
    publish.recover(str(output))
    assert sorted(os.listdir(output)) == [outputs.MARKER, "tags"]
    assert sorted(os.listdir(output / "tags")) == [outputs.MARKER, "first.parquet"]


HOLD = """
import sys, time
from pipelines.storage import locks
with locks.OutputLock(sys.argv[1], "tag"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_run_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path, capfd):
    output = str(tmp_path / "out")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, output],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(locks.LockHeld, match=rf"in use by tagscale tag on host \S+, pid {holder.pid}, started 20"):
            locks.OutputLock(output, "featurize").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    capfd.readouterr()
    with locks.OutputLock(output, "featurize") as lock:
        assert json.loads(open(lock.path).read())["pid"] == os.getpid()
    assert "taking over the stale lock of tagscale tag on host" in capfd.readouterr().err
    with locks.OutputLock(output, "featurize"):  # released cleanly: no takeover message
        pass
    assert "stale" not in capfd.readouterr().err


def test_a_remote_lock_is_stale_when_its_pid_is_gone_here_or_it_is_old():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = locks.holder_info("tag")
    assert not locks.is_stale(here)
    assert locks.is_stale({**here, "pid": dead.pid})
    assert not locks.is_stale(
        {**here, "host": "elsewhere", "pid": dead.pid}
    )  # another host: cannot tell, wait for the age
    assert locks.is_stale({**here, "host": "elsewhere"}, now=time.time() + locks.STALE_AFTER_S + 1)


@pytest.mark.slow
def test_gcs_publish_copies_the_entries_then_deletes_what_the_new_output_does_not_list():
    from gcs_emulator import running_emulator

    from pipelines.storage import fileio

    with running_emulator("publish") as client:

        def names():
            return sorted(blob.name for blob in client.bucket("publish").list_blobs())

        first = publish.Staging("gs://publish/out", "r1").create()
        for name in ("tags/a.parquet", "tags/manifest.json", "tmp/beam-temp-x/part", "summary.json"):
            fileio.write_text(first.path(name), name)
        first.publish(["tags", "summary.json"], commit="tags/manifest.json")
        assert names() == [
            "out/.tagscale-owned",
            "out/summary.json",
            "out/tags/.tagscale-owned",
            "out/tags/a.parquet",
            "out/tags/manifest.json",
        ]
        incremental = publish.Staging("gs://publish/out", "r2").create()
        incremental.carry_over("tags", ["a.parquet"])  # kept where it is, not copied
        fileio.write_text(incremental.path("tags", "b.parquet"), "b")
        fileio.write_text(incremental.path("tags", "manifest.json"), "a b")
        incremental.publish(["tags", "summary.json"], commit="tags/manifest.json")
        assert names() == [
            "out/.tagscale-owned",
            "out/tags/.tagscale-owned",
            "out/tags/a.parquet",
            "out/tags/b.parquet",
            "out/tags/manifest.json",
        ]
        full = publish.Staging("gs://publish/out", "r3").create()
        fileio.write_text(full.path("tags", "c.parquet"), "c")
        full.publish(["tags"], commit="tags/manifest.json")
        assert names() == ["out/.tagscale-owned", "out/tags/.tagscale-owned", "out/tags/c.parquet"]
        assert client.bucket("publish").blob("out/tags/c.parquet").download_as_text() == "c"


# ------------------------------------------------- the shared check, through the commands that write


def run(name: str, argv: list[str]) -> int:
    """A command in this process as `tagscale NAME` runs it (``infra.cli`` would hide scikit-learn
    from the whole test process before a Beam job, so the command's own main is called)."""
    import importlib

    from runtime.errors import run_command

    module = {"tag": "pipelines.tag", "featurize": "pipelines.featurize", "catalog": "pipelines.catalog_datasets"}[name]
    return run_command(name, importlib.import_module(module).main, argv)


def model_flags(command: str, tmp_path) -> list[str]:
    """tag's --model: a directory it resolves without reading (the output is checked first)."""
    if command != "tag":
        return []
    (tmp_path / "model").mkdir(exist_ok=True)
    return ["--model", str(tmp_path / "model")]


def only_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("command", ["tag", "featurize"])
def test_a_trailing_slash_or_a_file_url_reaches_the_root_check(command, catalog, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where `file:///` once made a folder named `file:`
    extra = model_flags(command, tmp_path)
    for spelling in ("/", "//", "file:///"):
        assert run(command, ["--catalog", str(catalog), *extra, "--output", spelling]) == 2
        assert only_line(capsys) == (
            f"tagscale {command}: error: --output / is a filesystem root; choose a directory for tagscale's output"
        )
    assert not (tmp_path / "file:").exists()
    victim = tmp_path / "victim"
    (victim / "photos").mkdir(parents=True)
    (victim / "notes.txt").write_text("mine")
    assert run(command, ["--catalog", str(catalog), *extra, "--output", f"file://{victim}/"]) == 2
    assert only_line(capsys) == (
        f"tagscale {command}: error: --output {victim} holds files tagscale did not write (notes.txt, photos); "
        "choose a new or empty directory"
    )
    assert sorted(os.listdir(victim)) == ["notes.txt", "photos"]
    assert run(command, ["--catalog", str(catalog), *extra, "--output", "file://victim"]) == 2
    assert "a file:// URL needs an absolute path" in only_line(capsys)


def test_the_home_directory_is_refused_even_when_empty(catalog, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(outputs.OutputError, match="is your home directory"):
        outputs.check_output(str(home) + "/", entries=("tags",))
    (home / ".profile").write_text("mine")
    assert run("tag", ["--catalog", str(catalog), *model_flags("tag", tmp_path), "--output", str(home)]) == 2
    assert only_line(capsys).endswith("is your home directory; choose a directory for tagscale's output")
    assert os.listdir(home) == [".profile"]


def test_a_folder_is_written_only_when_new_empty_or_tagscales(catalog, tmp_path):
    def check(output):
        return outputs.check_output(
            str(output),
            catalog=str(catalog),
            catalog_audio=_audio(catalog),
            entries=("tags", "summary.json"),
        )

    output = tmp_path / "out"
    assert check(output) == str(output)  # new
    output.mkdir()
    (output / ".tagscale.lock").write_text("")
    assert check(output) == str(output)  # empty but for tagscale's own files
    (output / "notes.txt").write_text("mine")
    with pytest.raises(outputs.OutputError, match=r"holds files tagscale did not write \(notes.txt\)"):
        check(output)
    ownership.mark(str(output))  # a folder tagscale made keeps the user's files it did not write
    assert check(output) == str(output)
    mixed = tmp_path / "mixed"
    ownership.mark(str(mixed / "tags"))  # tagscale's own entry beside nothing else
    assert check(mixed) == str(mixed)
    with pytest.raises(outputs.OutputError, match="is a file"):
        check(output / "notes.txt")


def test_file_outputs_replace_only_their_own_kind(tmp_path, capsys):
    with pytest.raises(outputs.OutputError, match="in a filesystem root"):
        outputs.check_output_file("/t.json", replaceable=lambda path: True, what="thresholds file")
    with pytest.raises(outputs.OutputError, match="is a directory"):
        outputs.check_output_file(str(tmp_path), replaceable=lambda path: True, what="thresholds file")
    precious = tmp_path / "catalog.parquet"
    precious.write_text("mine")
    argv = ["jamendo", "--train", "a", "--valid", "b", "--test", "c", "--audio-root", str(tmp_path)]
    assert run("catalog", [*argv, "--output", str(precious)]) == 2
    assert only_line(capsys) == (
        f"tagscale catalog: error: --output {precious} exists and is not a Parquet catalog; refusing to replace it"
    )
    assert precious.read_text() == "mine"
    assert run("catalog", [*argv, "--output", "file:///catalog.parquet"]) == 2
    assert "is in a filesystem root" in only_line(capsys)


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.parametrize("command", ["tag", "featurize"])
def test_a_read_only_output_is_one_line(command, catalog, tmp_path):
    from read_only import run_read_only

    folder = tmp_path / "ro"
    folder.mkdir()
    extra = model_flags(command, tmp_path)
    for output in (folder, folder / "out"):
        result = run_read_only(folder, [command, "--catalog", str(catalog), *extra, "--output", str(output)])
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            f"tagscale {command}: error: cannot write to {output}: {folder} is read-only or not writable by this user"
        )
    assert os.listdir(folder) == []


def test_an_output_under_a_file_is_one_line(catalog, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    output = tmp_path / "notes.txt" / "out"
    assert run("tag", ["--catalog", str(catalog), *model_flags("tag", tmp_path), "--output", str(output)]) == 2
    assert only_line(capsys) == (
        f"tagscale tag: error: cannot write to {output}: {tmp_path}/notes.txt is a file, not a directory"
    )
    with pytest.raises(TagscaleError, match=f"^cannot write to {output}: Not a directory$"):
        locks.OutputLock(str(output), "tag").acquire()  # the lock, should a caller skip the check
    assert (tmp_path / "notes.txt").read_text() == "mine"
