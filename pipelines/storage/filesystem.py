"""One filesystem layer for local paths and gs://: pyarrow.fs, chosen once per path.

:func:`resolve` turns a location into a ``(pyarrow.fs.FileSystem, path)`` pair: a local path
(or ``file://`` URL) to pyarrow's LocalFileSystem, ``gs://bucket/key`` to its GcsFileSystem.
Readers hand that pair to ``pyarrow.dataset`` and ``pyarrow.parquet``, which read a file's
footer and then only the column chunks a scan needs, by ranged reads: a gs:// run is scanned as
it is queried, never copied or read whole. DuckDB queries the same datasets (registered Arrow),
so it needs no extension of its own for gs://.

Why pyarrow.fs and not Beam's FileSystems: pyarrow.dataset and DuckDB scan a
``pyarrow.fs.FileSystem`` directly (Beam's would need a wrapper handler in Python, every ranged
read through it), and its GcsFileSystem talks to a GCS emulator as it does to GCS (the endpoint
from ``STORAGE_EMULATOR_HOST``, as google-cloud-storage does). Beam's FileSystems remain what a
Beam job's workers write with (:mod:`pipelines.storage.fileio`).
"""

from __future__ import annotations

import datetime
import functools
import os

import pyarrow.fs

REMOTE_SCHEMES = ("gs",)


def is_remote(path: str) -> bool:
    """An object-store location (gs://...); ``file://`` URLs and plain paths are local."""
    return "://" in path and not path.startswith("file://")


@functools.lru_cache(maxsize=4)
def _gcs(endpoint: str | None) -> pyarrow.fs.FileSystem:
    # A bounded retry: an unreachable endpoint fails in a minute rather than pyarrow's 15.
    retry = datetime.timedelta(seconds=60)
    if endpoint:  # an emulator (tests): plain HTTP, no credentials
        scheme, _, host = endpoint.rpartition("://")
        return pyarrow.fs.GcsFileSystem(
            anonymous=True, endpoint_override=host, scheme=scheme or "http", retry_time_limit=retry
        )
    return pyarrow.fs.GcsFileSystem(retry_time_limit=retry)


def resolve(location: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The filesystem that holds ``location`` and the path within it.

    Raises
    ------
    ValueError
        A URL of a scheme other than gs:// or file://.
    """
    if not is_remote(location):
        path = location[len("file://") :] if location.startswith("file://") else location
        return pyarrow.fs.LocalFileSystem(), os.path.abspath(path)
    scheme, _, rest = location.partition("://")
    if scheme not in REMOTE_SCHEMES:
        raise ValueError(f"{location}: only local paths and gs:// are supported")
    return _gcs(os.environ.get("STORAGE_EMULATOR_HOST")), rest.rstrip("/")


def exists(location: str) -> bool:
    """A file at ``location`` (a folder on local disk too)."""
    fs, path = resolve(location)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def is_file(location: str) -> bool:
    fs, path = resolve(location)
    return fs.get_file_info(path).type == pyarrow.fs.FileType.File


def size(location: str) -> int:
    """The size in bytes of the file at ``location``."""
    fs, path = resolve(location)
    return int(fs.get_file_info(path).size)


def read_bytes(location: str, limit: int | None = None) -> bytes:
    """The bytes of the file at ``location`` (at most ``limit`` of them)."""
    fs, path = resolve(location)
    with fs.open_input_stream(path) as handle:
        return handle.read() if limit is None else handle.read(limit)


def read_text(location: str) -> str:
    return read_bytes(location).decode("utf-8")


def list_files(location: str) -> list[str]:
    """Every file under the folder ``location``, recursively, as locations like it; none when
    there is no such folder."""
    fs, path = resolve(location)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True, allow_not_found=True))
    except (FileNotFoundError, NotADirectoryError):
        return []
    base = location.rstrip("/")
    found = [base + info.path[len(path.rstrip("/")) :] for info in infos if info.type == pyarrow.fs.FileType.File]
    return sorted(found)
