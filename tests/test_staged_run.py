"""publish.staged_run, the one lock/stage/publish/discard that featurize, tag and probe apply run in:
a run that finishes publishes its entries; one that fails publishes nothing, leaves the previous
output whole, deletes its staging and releases the lock."""

import os

import pytest

from pipelines.storage import locks, publish


def leftovers(output):
    return sorted(name for name in os.listdir(output) if name.startswith((publish.STAGING_PREFIX, publish.OLD_PREFIX)))


def write_run(staging, text):
    os.makedirs(staging.path("tags"), exist_ok=True)
    with open(staging.path("tags", "part.txt"), "w") as handle:
        handle.write(text)
    with open(staging.path("summary.json"), "w") as handle:
        handle.write(f'{{"run": "{text}"}}')


def test_a_finished_run_is_published_and_a_failed_one_changes_nothing(tmp_path):
    output = str(tmp_path / "out")
    entries = ["tags", "summary.json"]
    with publish.staged_run(output, "test", entries=entries, commit="summary.json") as staging:
        assert staging.dir.startswith(os.path.join(output, publish.STAGING_PREFIX))
        with pytest.raises(locks.LockHeld):  # the output is held for the whole run
            locks.OutputLock(output, "other").acquire()
        write_run(staging, "first")
        assert not os.path.exists(os.path.join(output, "summary.json"))  # nothing live before the end
    assert open(os.path.join(output, "tags", "part.txt")).read() == "first"
    assert open(os.path.join(output, "summary.json")).read() == '{"run": "first"}'
    assert leftovers(output) == []

    with pytest.raises(RuntimeError, match="the pipeline broke"):
        with publish.staged_run(output, "test", entries=entries, commit="summary.json") as staging:
            write_run(staging, "second")
            raise RuntimeError("the pipeline broke")
    assert open(os.path.join(output, "tags", "part.txt")).read() == "first"
    assert open(os.path.join(output, "summary.json")).read() == '{"run": "first"}'
    assert leftovers(output) == []  # the failed run's staging is gone
    with locks.OutputLock(output, "after"):  # and its lock released
        pass


def test_the_run_id_names_the_staging_directory(tmp_path):
    output = str(tmp_path / "out")
    with publish.staged_run(output, "test", entries=["tags"], commit=None, run_id="20260101T000000-abcdef") as staging:
        assert os.path.basename(staging.dir) == publish.STAGING_PREFIX + "20260101T000000-abcdef"
        write_run(staging, "x")
    first, second = publish.new_run_id(), publish.new_run_id()
    assert first != second and len(first) == len("20260101T000000-abcdef")
    assert publish.new_run_id("0123456789").endswith("-012345")
