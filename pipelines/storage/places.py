"""Where an output lives, local disk or an object store, decided once per location.

:func:`place_of` gives the :class:`Place` that holds a location (:func:`filesystem.is_remote`
decides); the output checks (:mod:`pipelines.storage.outputs`), the ownership marker
(:mod:`pipelines.storage.ownership`) and the publish (:mod:`pipelines.storage.publish`) ask it,
and never branch on the kind of location themselves. The two places differ where the stores
do: a local folder is renamed into place, an object store has no rename (objects are copied,
the commit file last); local paths resolve links, object names are what they are.
"""

from __future__ import annotations

import os
import shutil

from apache_beam.io.filesystems import FileSystems

from pipelines.storage import fileio, filesystem


class LocalPlace:
    """A local filesystem."""

    remote = False

    def real(self, path: str) -> str:
        """The path with links resolved (what two paths are compared by)."""
        return os.path.realpath(path[len("file://") :] if path.startswith("file://") else path)

    def is_root(self, path: str) -> bool:
        real = self.real(path)
        return os.path.dirname(real) == real

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def is_file(self, path: str) -> bool:
        return os.path.lexists(path) and not os.path.isdir(path)

    def names(self, directory: str) -> set[str]:
        """The names directly in ``directory``."""
        return set(os.listdir(directory)) if os.path.isdir(directory) else set()

    def check_writable(self, path: str, error) -> None:
        """Raise ``error(message)`` when the nearest existing folder of ``path`` is not writable
        by this process (a read-only mount, another user's folder)."""
        existing = os.path.abspath(path)
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if existing != os.path.abspath(path) and not os.path.isdir(existing):
            raise error(f"cannot write to {path}: {existing} is a file, not a directory")
        if not os.access(existing, os.W_OK | (0 if os.path.isfile(existing) else os.X_OK)):
            raise error(f"cannot write to {path}: {existing} is read-only or not writable by this user")

    def make_dir(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)

    def write_atomically(self, path: str, text: str) -> None:
        temporary = f"{path}.tmp-{os.getpid()}"
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)

    def delete_file(self, path: str) -> None:
        os.remove(path)

    def delete_tree(self, directory: str) -> None:
        shutil.rmtree(directory)

    def keep(self, live: str, staged: str) -> bool:
        """Carry the live file ``live`` into a staged output: a hard link at ``staged``. True."""
        os.makedirs(os.path.dirname(staged), exist_ok=True)
        os.link(live, staged)
        return True

    def publish(self, output: str, staging: str, old: str, journal: dict, mark) -> None:
        """Rename each staged entry into place (the live one renamed aside first, under ``old``,
        which ``mark`` gives the ownership marker); entries to remove go aside too."""
        for entry in journal["entries"]:
            self._move_into_place(
                fileio.join(staging, entry), fileio.join(output, entry), fileio.join(old, entry), mark
            )
        for entry in journal.get("remove", []):
            if os.path.lexists(fileio.join(output, entry)):
                mark(old)
                os.rename(fileio.join(output, entry), fileio.join(old, entry))

    @staticmethod
    def _move_into_place(staged: str, live: str, old: str, mark) -> None:
        if not os.path.lexists(staged):
            return  # moved before a crash
        if os.path.lexists(live):
            if os.path.lexists(old):
                shutil.rmtree(live) if os.path.isdir(live) else os.remove(live)
            else:
                mark(os.path.dirname(old))
                os.rename(live, old)
        os.rename(staged, live)


class ObjectPlace:
    """An object store (gs://): folders are prefixes, there is no rename."""

    remote = True

    def real(self, path: str) -> str:
        return path.rstrip("/")

    def is_root(self, path: str) -> bool:
        return "/" not in path.partition("://")[2].strip("/")  # gs://bucket: the whole bucket

    def list_objects(self, prefix: str) -> list[str]:
        """Every object under ``prefix`` (a folder), recursively; none when there is none."""
        return filesystem.list_files(prefix.rstrip("/"))

    def exists(self, path: str) -> bool:
        return fileio.exists(path) or bool(self.list_objects(path))

    def is_dir(self, path: str) -> bool:
        return bool(self.list_objects(path))

    def is_file(self, path: str) -> bool:
        return fileio.exists(path)

    def names(self, directory: str) -> set[str]:
        return {path[len(directory.rstrip("/")) + 1 :].split("/")[0] for path in self.list_objects(directory)}

    def check_writable(self, path: str, error) -> None:
        """Nothing to check before writing: the store says so on the first write."""

    def make_dir(self, directory: str) -> None:
        """Nothing to make: a folder is the prefix of the objects written under it."""

    def write_atomically(self, path: str, text: str) -> None:
        fileio.write_text(path, text)  # one object write: readers see the old or the new object

    def delete_file(self, path: str) -> None:
        FileSystems.delete([path])

    def delete_tree(self, directory: str) -> None:
        fileio.delete_tree(directory)

    def keep(self, live: str, staged: str) -> bool:
        """A live object stays where it is (False): the publish does not delete what it keeps."""
        return False

    def publish(self, output: str, staging: str, old: str, journal: dict, mark) -> None:
        """Copy the staged objects over the live ones, the commit file last; then delete the
        objects of the previous output that the new one does not have (nor keeps)."""
        entries = journal["entries"]
        relative = [path[len(staging.rstrip("/")) + 1 :] for path in self.list_objects(staging)]
        relative = [name for name in relative if any(name == e or name.startswith(e + "/") for e in entries)]
        commit = journal.get("commit")
        for name in sorted(relative, key=lambda name: name == commit):  # the commit file last
            FileSystems.copy([fileio.join(staging, name)], [fileio.join(output, name)])
        keep = set(relative) | set(journal.get("keep", []))
        for entry in journal.get("remove", []):
            if fileio.exists(fileio.join(output, entry)):  # a file this run did not make: stale
                FileSystems.delete([fileio.join(output, entry)])
        for entry in entries + journal.get("remove", []):
            for path in self.list_objects(fileio.join(output, entry)):
                if path[len(output.rstrip("/")) + 1 :] not in keep:
                    FileSystems.delete([path])


LOCAL, OBJECTS = LocalPlace(), ObjectPlace()


def place_of(location: str) -> LocalPlace | ObjectPlace:
    """The place that holds ``location``."""
    return OBJECTS if filesystem.is_remote(location) else LOCAL
