"""Safe outputs: a run stages everything it writes and publishes it only when it has finished.

    DIR = outputs.check_output(DIR, catalog=CATALOG, catalog_audio=audio_uris(CATALOG), entries=ENTRIES)
    with outputs.staged_run(DIR, "tag", entries=ENTRIES, commit="tags/manifest.json") as staging:
        ... the pipeline writes under staging.path(...) (DIR/.tagscale-staging-RUN_ID/) ...

After the block the staged entries are live; had it raised, DIR would be as it was. A publish
is rolled forward from a journal (``DIR/.tagscale-publish.json``) written once the staging is
complete, so a run killed half-way through publishing is finished by the next run that takes the
lock. Locally each entry is renamed into place (the previous one renamed aside first, deleted
last); on gs://, where there is no rename, the objects are copied first and the commit file (a
manifest readers go by) last, then objects of the previous output the new one does not list are
deleted.

tagscale deletes only directories that carry its marker file (:data:`MARKER`). Every writing
command checks its output first (:func:`check_output`, :func:`check_output_file`): no root, no
home directory, nothing holding its inputs, nothing tagscale did not write or cannot write.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from typing import Iterator

from apache_beam.io.filesystems import FileSystems

from pipelines.storage import fileio, locks
from pipelines.storage.ownership import (
    MARKER,
    OutputError,
    delete_owned,
    is_dir,
    is_remote,
    list_objects,
    mark,
    owned,
    path_exists,
)

LOG = logging.getLogger("tagscale.outputs")
STAGING_PREFIX = ".tagscale-staging-"
OLD_PREFIX = ".tagscale-old-"
JOURNAL = ".tagscale-publish.json"
# What every writing command's --output help says of the rules check_output enforces.
RULES = "new, empty or made by tagscale; not a root, your home directory or a folder holding its inputs"
AUDIO_CHECK_ROWS = 1000  # catalog rows whose audio location is checked against --output on the driver


# ---------------------------------------------------------------------- checks before a run


def normalize(output: str) -> str:
    """The one spelling of an output location every check and writer uses.

    ``file:///abs`` becomes ``/abs``; trailing slashes go, except that a root stays a root
    (``/`` and ``file:///`` are ``/``, so the root check sees them); ``gs://bucket/dir/`` becomes
    ``gs://bucket/dir``. An empty location or a ``file://`` URL without an absolute path is
    refused, as it names no place a user can see.
    """
    if output.startswith("file://"):
        path = output[len("file://") :]
        if not path.startswith("/"):
            raise OutputError(f"--output {output}: a file:// URL needs an absolute path (file:///dir)")
        output = path
    if not output.strip():
        raise OutputError("--output is empty; choose a directory for tagscale's output")
    scheme, _, rest = output.partition("://")
    return f"{scheme}://{rest.strip('/')}" if is_remote(output) else output.rstrip("/") or "/"


def _real(path: str) -> str:
    return os.path.realpath(path[len("file://") :] if path.startswith("file://") else path)


def _is_root(output: str) -> bool:
    if is_remote(output):
        scheme, _, rest = output.partition("://")
        return "/" not in rest.strip("/")  # gs://bucket: the whole bucket
    real = _real(output)
    return os.path.dirname(real) == real


def within(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or lies inside it (local paths resolved, links followed)."""
    if is_remote(path) != is_remote(directory):
        return False
    if is_remote(path):
        path, directory = path.rstrip("/"), directory.rstrip("/")
    else:
        path, directory = _real(path), _real(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _foreign_names(directory: str, flag: str) -> list[str]:
    """Names in ``directory`` tagscale did not put there (not its dot files, not a folder with its
    marker); none when ``directory`` itself carries the marker."""
    if not path_exists(directory) or owned(directory):
        return []
    if not is_remote(directory) and not os.path.isdir(directory):
        raise OutputError(f"{flag} {directory} is a file; choose a directory for tagscale's output")
    names = (
        {path[len(directory.rstrip("/")) + 1 :].split("/")[0] for path in list_objects(directory)}
        if is_remote(directory)
        else set(os.listdir(directory))
    )
    mine = [name for name in names if is_dir(fileio.join(directory, name)) and owned(fileio.join(directory, name))]
    return sorted(name for name in names - set(mine) if not name.startswith(".tagscale"))


def _check_writable(path: str) -> None:
    """Refuse a local ``path`` whose nearest existing folder this process cannot write (a
    read-only mount, another user's folder), before a run takes the lock or stages anything."""
    if is_remote(path):
        return
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if existing != os.path.abspath(path) and not os.path.isdir(existing):
        raise OutputError(f"cannot write to {path}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | (0 if os.path.isfile(existing) else os.X_OK)):
        raise OutputError(f"cannot write to {path}: {existing} is read-only or not writable by this user")


def check_output(
    output: str,
    *,
    catalog: str | None = None,
    catalog_audio=(),
    entries: tuple[str, ...],
    inputs: tuple[str, ...] = (),
    flag: str = "--output",
) -> str:
    """Refuse an output folder that tagscale must not write into or delete from.

    Every command that writes a folder calls this before it writes anything. Refused: an
    empty location; a filesystem or bucket root; the home directory; a folder that is or
    contains the catalog, the audio of its first :data:`AUDIO_CHECK_ROWS` rows (``catalog_audio``,
    ``(row number, uri)`` pairs read lazily: a streamed peek, not a catalog read) or another
    input of the command (``inputs``); an existing folder
    holding files tagscale did not write (it carries no marker and holds more than tagscale's
    own dot files); an output entry that a publish would replace but tagscale did not make;
    a folder this process cannot write. Messages name the folder as ``flag``.

    Returns
    -------
    str
        ``output`` as :func:`normalize` spells it, the path the command should write to.
    """
    output = normalize(output)
    if _is_root(output):
        raise OutputError(f"{flag} {output} is a filesystem root; choose a directory for tagscale's output")
    if not is_remote(output) and _real(output) == _real(os.path.expanduser("~")):
        raise OutputError(f"{flag} {output} is your home directory; choose a directory for tagscale's output")
    if catalog is not None:
        _check_catalog(output, catalog, catalog_audio)
    for source in inputs:
        if within(source, output):
            raise OutputError(f"{flag} {output} is or contains the input {source}; choose another directory")
    for entry in entries:
        path = fileio.join(output, entry)
        if path_exists(path) and is_dir(path) and not owned(path):
            raise OutputError(f"{path} exists and was not made by tagscale (no {MARKER}); refusing to replace it")
    foreign = _foreign_names(output, flag)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(
            f"{flag} {output} holds files tagscale did not write ({shown}); choose a new or empty directory"
        )
    _check_writable(output)
    return output


def _check_catalog(output: str, catalog: str, catalog_audio) -> None:
    if within(catalog, output):
        raise OutputError(f"--output {output} contains the catalog {catalog}; choose another directory")
    for number, uri in catalog_audio:
        if number > AUDIO_CHECK_ROWS:
            break
        if uri and within(uri, output):
            raise OutputError(
                f"--output {output} contains the catalog's audio ({uri}, row {number}); choose another directory"
            )


def check_output_file(path: str, *, replaceable, what: str) -> str:
    """Refuse a single output file tagscale must not write: an empty location, a folder, a file
    directly in a filesystem root, an existing file that ``replaceable(path)`` does not take for
    a ``what`` (e.g. "thresholds file": an earlier output of the command), a file this process
    cannot write. Returns the normalized path."""
    path = normalize(path)
    parent = path.rsplit("/", 1)[0] if "/" in path else "."
    if not is_remote(path) and _is_root(parent or "/"):
        raise OutputError(f"--output {path} is in a filesystem root; choose a file in a directory")
    if path_exists(path) and is_dir(path):
        raise OutputError(f"--output {path} is a directory; give the {what} to write")
    if path_exists(path) and not replaceable(path):
        raise OutputError(f"--output {path} exists and is not a {what}; refusing to replace it")
    _check_writable(path)
    return path


# ---------------------------------------------------------------------------- staging


class Staging:
    """A run's private directory ``OUTPUT/.tagscale-staging-RUN_ID/``, published as a whole."""

    def __init__(self, output: str, run_id: str):
        self.output = output
        self.run_id = run_id
        self.dir = fileio.join(output, STAGING_PREFIX + run_id)
        self._keep: list[str] = []

    def create(self) -> "Staging":
        if _only_tagscale_files(self.output):
            mark(self.output)  # tagscale made the output directory, so it owns the files it puts there
        mark(self.dir)
        return self

    def path(self, *parts: str) -> str:
        return fileio.join(self.dir, *parts)

    def carry_over(self, entry: str, names: list[str]) -> None:
        """Keep files of the live ``entry`` directory in the published output (an incremental
        run adds to what is there): hard links into staging locally, kept in place on gs://."""
        for name in names:
            if is_remote(self.output):
                self._keep.append(f"{entry}/{name}")
            else:
                os.makedirs(self.path(entry), exist_ok=True)
                os.link(fileio.join(self.output, entry, name), self.path(entry, name))

    def publish(self, entries: list[str], *, commit: str | None = None) -> None:
        """Replace the live ``entries`` with the staged ones; ``commit`` (a staged file, e.g.
        the manifest readers go by) lands last. Every staged directory gets the marker."""
        staged = [entry for entry in entries if path_exists(self.path(entry))]
        for entry in staged:
            if is_dir(self.path(entry)):
                mark(self.path(entry))
        journal = {
            "staging": STAGING_PREFIX + self.run_id,
            "old": OLD_PREFIX + self.run_id,
            "entries": staged,
            "remove": [entry for entry in entries if entry not in staged],  # this run made none: old ones are stale
            "commit": commit,
            "keep": self._keep,
        }
        _write_atomically(fileio.join(self.output, JOURNAL), json.dumps(journal, indent=1))
        roll_forward(self.output, journal)

    def discard(self) -> None:
        """Delete the staging directory (the run failed; the live output was never touched)."""
        try:
            delete_owned(self.dir)
        except Exception as error:  # the original failure matters more than the clean-up
            LOG.warning("could not delete %s: %s", self.dir, error)


def new_run_id(suffix: str | None = None) -> str:
    """A run's id: its UTC start second, then 6 characters of ``suffix`` or else of random hex."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + (suffix or uuid.uuid4().hex)[:6]


@contextlib.contextmanager
def staged_run(
    output: str, command: str, *, entries: list[str], commit: str | None, run_id: str | None = None
) -> Iterator[Staging]:
    """Run a command's writes into ``output`` as one unit: locked, staged, then published.

    Holds ``output``'s lock for ``command`` (:class:`pipelines.storage.locks.LockHeld` when another run
    has it), finishes a publish a killed run left (:func:`recover`), and yields a fresh
    :class:`Staging`. A block that ends normally publishes ``entries`` (``commit`` last, see
    :meth:`Staging.publish`); one that raises, or a publish that fails, deletes the staging
    directory and leaves the live output as it was. The lock is released either way.

    Parameters
    ----------
    output, command : str
        The checked output folder (:func:`check_output`); what the lock names as its holder.
    entries : list of str
        Top-level names the run publishes; a listed entry the run did not write is removed.
    commit : str or None
        The staged file that lands last (the manifest readers go by).
    run_id : str, optional
        Names the staging directory; :func:`new_run_id` by default.
    """
    with locks.OutputLock(output, command):
        recover(output)
        staging = Staging(output, run_id or new_run_id()).create()
        try:
            yield staging
            staging.publish(entries, commit=commit)
        except BaseException:
            staging.discard()
            raise


def _only_tagscale_files(directory: str) -> bool:
    if is_remote(directory):
        names = [path[len(directory.rstrip("/")) + 1 :] for path in list_objects(directory)]
    elif os.path.isdir(directory):
        names = os.listdir(directory)
    else:
        return not os.path.lexists(directory)
    return all(name.startswith(".tagscale") for name in names)


def _write_atomically(path: str, text: str) -> None:
    if is_remote(path):
        fileio.write_text(path, text)  # one object write: readers see the old or the new object
        return
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def roll_forward(output: str, journal: dict) -> None:
    """Finish a publish from its journal; safe to repeat after a crash at any point."""
    staging, old = fileio.join(output, journal["staging"]), fileio.join(output, journal["old"])
    if is_remote(output):
        _publish_objects(output, staging, journal)
    else:
        for entry in journal["entries"]:
            _move_into_place(fileio.join(staging, entry), fileio.join(output, entry), fileio.join(old, entry))
        for entry in journal.get("remove", []):
            if os.path.lexists(fileio.join(output, entry)):
                mark(old)
                os.rename(fileio.join(output, entry), fileio.join(old, entry))
    if is_remote(output):
        FileSystems.delete([fileio.join(output, JOURNAL)])
    else:
        os.remove(fileio.join(output, JOURNAL))
    for leftover in (old, staging):
        delete_owned(leftover)


def _move_into_place(staged: str, live: str, old: str) -> None:
    if not os.path.lexists(staged):
        return  # moved before a crash
    if os.path.lexists(live):
        if os.path.lexists(old):
            shutil.rmtree(live) if os.path.isdir(live) else os.remove(live)
        else:
            mark(os.path.dirname(old))
            os.rename(live, old)
    os.rename(staged, live)


def _publish_objects(output: str, staging: str, journal: dict) -> None:
    entries = journal["entries"]
    relative = [path[len(staging.rstrip("/")) + 1 :] for path in list_objects(staging)]
    relative = [name for name in relative if any(name == entry or name.startswith(entry + "/") for entry in entries)]
    commit = journal.get("commit")
    ordered = sorted(relative, key=lambda name: name == commit)  # the commit file last
    for name in ordered:
        FileSystems.copy([fileio.join(staging, name)], [fileio.join(output, name)])
    keep = set(relative) | set(journal.get("keep", []))
    for entry in journal.get("remove", []):
        if fileio.exists(fileio.join(output, entry)):  # a file this run did not make: stale
            FileSystems.delete([fileio.join(output, entry)])
    for entry in journal["entries"] + journal.get("remove", []):
        for path in list_objects(fileio.join(output, entry)):
            name = path[len(output.rstrip("/")) + 1 :]
            if name not in keep:
                FileSystems.delete([path])


def recover(output: str) -> None:
    """Under the lock: finish a publish a killed run left half done, and delete staging
    directories of runs that died before publishing (they never touched the live output)."""
    journal_path = fileio.join(output, JOURNAL)
    if fileio.exists(journal_path):
        journal = json.loads(fileio.read_text(journal_path))
        LOG.warning("finishing the publish of run %s that was interrupted", journal["staging"])
        roll_forward(output, journal)
    if is_remote(output):
        leftovers = {
            fileio.join(output, path[len(output.rstrip("/")) + 1 :].split("/")[0])
            for path in list_objects(output)
            if path[len(output.rstrip("/")) + 1 :].startswith((STAGING_PREFIX, OLD_PREFIX))
        }
    elif os.path.isdir(output):
        leftovers = {
            os.path.join(output, name) for name in os.listdir(output) if name.startswith((STAGING_PREFIX, OLD_PREFIX))
        }
    else:
        leftovers = set()
    for leftover in sorted(leftovers):
        if owned(leftover):
            LOG.warning("deleting %s, left by a run that did not finish", leftover)
            delete_owned(leftover)
