"""What tagscale owns: the marker it writes, the folders it alone may delete, paths that exist."""

import os

import pytest

from pipelines.storage import ownership


def test_a_marked_folder_is_owned_and_only_that_one_is_deleted(tmp_path):
    made = tmp_path / "out" / "tags"
    ownership.mark(str(made))  # creates the folder as well
    assert (made / ownership.MARKER).read_text().startswith("made by tagscale")
    assert ownership.owned(str(made)) and not ownership.owned(str(tmp_path / "out"))
    (made / "run-1.parquet").write_bytes(b"rows")
    ownership.delete_owned(str(made))
    assert not made.exists() and (tmp_path / "out").is_dir()
    ownership.delete_owned(str(made))  # nothing left to delete: not an error


def test_a_users_folder_is_never_deleted(tmp_path):
    mine = tmp_path / "photos"
    (mine / "2024").mkdir(parents=True)
    (mine / "2024" / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ownership.OutputError) as error:
        ownership.delete_owned(str(mine))
    assert str(error.value) == f"{mine} was not made by tagscale (no {ownership.MARKER} in it); refusing to delete it"
    assert (mine / "2024" / "cat.jpg").read_bytes() == b"\xff\xd8"
    # A marker further down does not make the folder above tagscale's.
    ownership.mark(str(mine / "2024"))
    with pytest.raises(ownership.OutputError):
        ownership.delete_owned(str(mine))
    assert (mine / "2024" / "cat.jpg").exists()


def test_paths_and_locations(tmp_path):
    assert ownership.is_remote("gs://bucket/run") and not ownership.is_remote("file:///tmp/run")
    assert not ownership.is_remote("/tmp/run")
    dangling = tmp_path / "link"
    os.symlink(tmp_path / "gone", dangling)  # a link to nothing still occupies its name
    assert ownership.path_exists(str(dangling)) and not ownership.is_dir(str(dangling))
    assert ownership.is_dir(str(tmp_path)) and not ownership.path_exists(str(tmp_path / "none"))
    assert ownership.list_objects(str(tmp_path / "none")) == []


def test_on_an_object_store_a_folder_is_a_prefix(tmp_path):
    """On gs:// (the GCS emulator) a folder exists when objects sit under its prefix."""
    from gcs_emulator import running_emulator

    with running_emulator("ownership-test") as client:
        bucket = client.bucket("ownership-test")
        bucket.blob("run/tags/run-1.parquet").upload_from_string(b"rows")
        assert ownership.path_exists("gs://ownership-test/run") and ownership.is_dir("gs://ownership-test/run")
        assert not ownership.path_exists("gs://ownership-test/other")
        with pytest.raises(ownership.OutputError, match="was not made by tagscale"):
            ownership.delete_owned("gs://ownership-test/run")
        ownership.mark("gs://ownership-test/run")
        assert ownership.owned("gs://ownership-test/run")
        assert ownership.list_objects("gs://ownership-test/run") == [
            "gs://ownership-test/run/.tagscale-owned",
            "gs://ownership-test/run/tags/run-1.parquet",
        ]
        ownership.delete_owned("gs://ownership-test/run")
        assert not ownership.path_exists("gs://ownership-test/run")
