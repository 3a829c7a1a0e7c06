"""What tagscale owns: folders carrying its marker file, the only ones it ever deletes.

:mod:`pipelines.storage.outputs` builds its output checks and its publish on these.
"""

from __future__ import annotations

import os
import shutil

from apache_beam.io.filesystems import FileSystems

from pipelines.storage import fileio
from runtime.errors import TagscaleError

MARKER = ".tagscale-owned"


class OutputError(TagscaleError):
    """An output location tagscale must not write to or delete; the message says why."""


def is_remote(path: str) -> bool:
    """An object-store location (gs://...); ``file://`` URLs are local."""
    return "://" in path and not path.startswith("file://")


def mark(directory: str) -> None:
    """Create ``directory`` (if needed) and put tagscale's ownership marker in it."""
    if not is_remote(directory):
        os.makedirs(directory, exist_ok=True)
    fileio.write_text(fileio.join(directory, MARKER), "made by tagscale: it may replace or delete this directory\n")


def owned(directory: str) -> bool:
    """``directory`` carries tagscale's marker: tagscale made it and may replace or delete it."""
    return fileio.exists(fileio.join(directory, MARKER))


def path_exists(path: str) -> bool:
    """A file or folder at ``path``; on gs://, where folders are prefixes, any object under it too."""
    if is_remote(path):
        return fileio.exists(path) or bool(list_objects(path))
    return os.path.lexists(path)


def is_dir(path: str) -> bool:
    """``path`` is a folder (on gs://: a prefix with objects under it)."""
    return bool(list_objects(path)) if is_remote(path) else os.path.isdir(path)


def delete_owned(directory: str) -> None:
    """Delete ``directory`` and all under it, but only when tagscale made it (it carries the marker)."""
    if not path_exists(directory):
        return
    if not owned(directory):
        raise OutputError(f"{directory} was not made by tagscale (no {MARKER} in it); refusing to delete it")
    if is_remote(directory):
        fileio.delete_tree(directory)
    else:
        shutil.rmtree(directory)


def list_objects(prefix: str) -> list[str]:
    """Every object under ``prefix`` (a remote folder), recursively; none when there is none."""
    pattern = prefix.rstrip("/") + "/**"
    try:
        return sorted(meta.path for meta in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # nothing under the prefix
        return []
