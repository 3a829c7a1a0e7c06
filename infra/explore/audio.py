"""The explorer's audio: a Range header read as RFC 9110 says, and a run's audio file opened."""

from __future__ import annotations

import os
import re

# A fixed table rather than the mimetypes module, which reads system files on first use.
AUDIO_TYPES = {
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
}
CHUNK = 64 * 1024
RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.ASCII)


def parse_range(header: str | None, size: int):
    """``(start, end)`` inclusive for one ``bytes=`` range; None to send the whole file;
    ``"unsatisfiable"`` for a range past the end.

    As RFC 9110 says, a Range header that is not one well-formed range (several ranges, a
    last byte before the first, anything but digits) is ignored, and the whole file sent."""
    match = RANGE.fullmatch(header or "")
    if not match or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":
        length = int(last)
        return (max(size - length, 0), size - 1) if length > 0 and size else "unsatisfiable"
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(int(last), size - 1) if last else size - 1


def open_audio(uri: str):
    """``(file object, size)`` for a URI the run lists: local paths directly, gs:// through Beam."""
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if "://" in uri:
        from apache_beam.io.filesystems import FileSystems

        matches = FileSystems.match([uri])[0].metadata_list
        if not matches:
            raise FileNotFoundError(uri)
        return FileSystems.open(uri, compression_type="uncompressed"), matches[0].size_in_bytes
    handle = open(os.path.abspath(uri), "rb")
    return handle, os.fstat(handle.fileno()).st_size
