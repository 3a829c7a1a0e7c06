"""One filesystem layer for local paths and gs://: a pyarrow filesystem, chosen once per path.

:func:`resolve` turns a location into a ``(pyarrow.fs.FileSystem, path)`` pair: a local path
(or ``file://`` URL) to pyarrow's LocalFileSystem, ``gs://bucket/key`` to a pyarrow filesystem
whose reads go through Beam's GCS client (:class:`BeamGcsHandler`). Readers hand the pair to
``pyarrow.dataset`` and ``pyarrow.parquet``, which read a file's footer and then only the
column chunks a scan needs, by ranged reads: a gs:// run is scanned as it is queried, never
copied or read whole. DuckDB queries the same datasets (registered Arrow), so it needs no
extension of its own for gs://.

Why Beam's GCS client under pyarrow's interface, and not pyarrow's own GcsFileSystem: the
jobs already write gs:// through Beam (one client, one set of credentials and retries), and
pyarrow's GcsFileSystem (google-cloud-cpp) stalled against the GCS emulator the tests run
(gcp-storage-emulator, single-threaded): after the first object read, later reads never
reached it and timed out. Beam's client (google-cloud-storage) works with the emulator and with
GCS alike. The price is Python in the read path, a chunk of :data:`READ_CHUNK` bytes per read.
"""

from __future__ import annotations

import functools
import os

import pyarrow
import pyarrow.fs

REMOTE_SCHEMES = ("gs",)
READ_CHUNK = 2**20  # bytes a gs:// read fetches at least: a Parquet footer or page costs one request


class BeamGcsHandler(pyarrow.fs.FileSystemHandler):
    """gs:// objects as a read-only pyarrow filesystem, through Beam's GCS client (paths are
    ``bucket/key``). Writes go through Beam's FileSystems (:mod:`pipelines.storage.fileio`)."""

    def __init__(self):
        self._client = None

    def _gcs(self):
        if self._client is None:
            from apache_beam.io.gcp import gcsio

            self._client = gcsio.GcsIO()
        return self._client

    def get_type_name(self) -> str:
        return "beam-gcs"

    def equals(self, other) -> bool:
        return isinstance(other, BeamGcsHandler)

    def normalize_path(self, path: str) -> str:
        return path.rstrip("/")

    def get_file_info(self, paths):
        from google.api_core.exceptions import NotFound

        infos = []
        for path in paths:
            try:
                infos.append(pyarrow.fs.FileInfo(path, pyarrow.fs.FileType.File, size=self._gcs().size(f"gs://{path}")))
            except NotFound:
                under = next(iter(self._gcs().list_files(f"gs://{path.rstrip('/')}/")), None)
                kind = pyarrow.fs.FileType.Directory if under else pyarrow.fs.FileType.NotFound
                infos.append(pyarrow.fs.FileInfo(path, kind))
        return infos

    def get_file_info_selector(self, selector):
        base = selector.base_dir.rstrip("/") + "/"
        found = []
        for url, size in self._gcs().list_files(f"gs://{base}"):
            path = url[len("gs://") :]
            if selector.recursive or "/" not in path[len(base) :]:
                found.append(pyarrow.fs.FileInfo(path, pyarrow.fs.FileType.File, size=size))
        if not found and not selector.allow_not_found:
            raise FileNotFoundError(f"gs://{base}")
        return found

    def open_input_file(self, path: str):
        from google.api_core.exceptions import NotFound

        try:
            reader = self._gcs().open(f"gs://{path}", "rb", read_buffer_size=READ_CHUNK)
        except NotFound as error:
            raise FileNotFoundError(f"gs://{path}: no such object") from error
        return pyarrow.PythonFile(reader, mode="r")

    def open_input_stream(self, path: str):
        return self.open_input_file(path)

    def _read_only(self, *args, **kwargs):
        raise NotImplementedError("tagscale writes gs:// through Beam's FileSystems, not this reader")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = _read_only
    delete_file = move = copy_file = open_output_stream = open_append_stream = _read_only


def is_remote(path: str) -> bool:
    """An object-store location (gs://...); ``file://`` URLs and plain paths are local."""
    return "://" in path and not path.startswith("file://")


@functools.lru_cache(maxsize=4)
def _gcs(endpoint: str | None) -> pyarrow.fs.FileSystem:
    # One client per endpoint: google-cloud-storage reads STORAGE_EMULATOR_HOST when it is made.
    return pyarrow.fs.PyFileSystem(BeamGcsHandler())


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


def is_file(location: str) -> bool:
    fs, path = resolve(location)
    return fs.get_file_info(path).type == pyarrow.fs.FileType.File


def size(location: str) -> int:
    """The size in bytes of the file at ``location``."""
    fs, path = resolve(location)
    return int(fs.get_file_info(path).size)


def read_text(location: str) -> str:
    """The text (UTF-8) of the file at ``location``."""
    fs, path = resolve(location)
    with fs.open_input_stream(path) as handle:
        return handle.read().decode("utf-8")


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
