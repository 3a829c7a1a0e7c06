"""How a run is published: it stages everything it writes and publishes it only when it has finished.

    with publish.staged_run(DIR, "tag", entries=ENTRIES, commit="tags/manifest.json") as staging:
        ... the pipeline writes under staging.path(...) (DIR/.tagscale-staging-RUN_ID/) ...

``DIR`` is an output :func:`pipelines.storage.outputs.check_output` has checked. After the block
the staged entries are live; had it raised, DIR would be as it was. A publish is rolled forward
from a journal (``DIR/.tagscale-publish.json``) written once the staging is complete, so a run
killed half-way through publishing is finished by the next run that takes the lock. Locally
each entry is renamed into place (the previous one renamed aside first, deleted last); on
gs://, where there is no rename, the objects are copied first and the commit file (a manifest
readers go by) last, then objects of the previous output the new one does not list are deleted
(:mod:`pipelines.storage.places` holds the two ways).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from typing import Iterator

from pipelines.storage import fileio, locks
from pipelines.storage.ownership import delete_owned, is_dir, mark, owned, path_exists
from pipelines.storage.places import place_of

LOG = logging.getLogger("tagscale.publish")
STAGING_PREFIX = ".tagscale-staging-"
OLD_PREFIX = ".tagscale-old-"
JOURNAL = ".tagscale-publish.json"


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
        place = place_of(self.output)
        for name in names:
            if not place.keep(fileio.join(self.output, entry, name), self.path(entry, name)):
                self._keep.append(f"{entry}/{name}")

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
        place_of(self.output).write_atomically(fileio.join(self.output, JOURNAL), json.dumps(journal, indent=1))
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
    place = place_of(directory)
    if not place.exists(directory):
        return True
    if not place.is_dir(directory):
        return False
    return all(name.startswith(".tagscale") for name in place.names(directory))


def roll_forward(output: str, journal: dict) -> None:
    """Finish a publish from its journal; safe to repeat after a crash at any point."""
    place = place_of(output)
    staging, old = fileio.join(output, journal["staging"]), fileio.join(output, journal["old"])
    place.publish(output, staging, old, journal, mark)
    place.delete_file(fileio.join(output, JOURNAL))
    for leftover in (old, staging):
        delete_owned(leftover)


def recover(output: str) -> None:
    """Under the lock: finish a publish a killed run left half done, and delete staging
    directories of runs that died before publishing (they never touched the live output)."""
    journal_path = fileio.join(output, JOURNAL)
    if fileio.exists(journal_path):
        journal = json.loads(fileio.read_text(journal_path))
        LOG.warning("finishing the publish of run %s that was interrupted", journal["staging"])
        roll_forward(output, journal)
    names = place_of(output).names(output)
    leftovers = {fileio.join(output, name) for name in names if name.startswith((STAGING_PREFIX, OLD_PREFIX))}
    for leftover in sorted(leftovers):
        if owned(leftover):
            LOG.warning("deleting %s, left by a run that did not finish", leftover)
            delete_owned(leftover)
