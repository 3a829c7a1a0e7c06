"""What tagscale owns: folders carrying its marker file, the only ones it ever deletes.

:mod:`pipelines.storage.outputs` builds its output checks and its publish on these.
"""

from __future__ import annotations

from pipelines.storage import fileio
from pipelines.storage.filesystem import is_remote
from pipelines.storage.places import place_of
from runtime.errors import TagscaleError

MARKER = ".tagscale-owned"


class OutputError(TagscaleError):
    """An output location tagscale must not write to or delete; the message says why."""


def mark(directory: str) -> None:
    """Create ``directory`` (if needed) and put tagscale's ownership marker in it."""
    place_of(directory).make_dir(directory)
    fileio.write_text(fileio.join(directory, MARKER), "made by tagscale: it may replace or delete this directory\n")


def owned(directory: str) -> bool:
    """``directory`` carries tagscale's marker: tagscale made it and may replace or delete it."""
    return fileio.exists(fileio.join(directory, MARKER))


def path_exists(path: str) -> bool:
    """A file or folder at ``path``; on gs://, where folders are prefixes, any object under it too."""
    return place_of(path).exists(path)


def is_dir(path: str) -> bool:
    """``path`` is a folder (on gs://: a prefix with objects under it)."""
    return place_of(path).is_dir(path)


def delete_owned(directory: str) -> None:
    """Delete ``directory`` and all under it, but only when tagscale made it (it carries the marker)."""
    if not path_exists(directory):
        return
    if not owned(directory):
        raise OutputError(f"{directory} was not made by tagscale (no {MARKER} in it); refusing to delete it")
    place_of(directory).delete_tree(directory)


def list_objects(prefix: str) -> list[str]:
    """Every object under ``prefix`` (a remote folder), recursively; none when there is none."""
    return place_of(prefix).list_objects(prefix) if is_remote(prefix) else []
