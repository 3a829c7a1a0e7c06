"""Catalog manifests: CSV / JSONL / Parquet rows of (track_id, uri, tags[, split]).

An optional ``split`` column (train / valid / test; empty: none) puts a track in that split
when featurizing, as the datasets' official splits need (see :mod:`pipelines.catalog_datasets`).

A catalog that cannot be read at all (missing, unknown format, wrong header) raises
:class:`CatalogError` before any pipeline starts. A single bad row inside a good catalog
becomes a dead-letter record, so every row is accounted for.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os

import apache_beam as beam

from model.features import SPLITS  # what a catalog's split column may say
from pipelines import dead_letter, names
from runtime.errors import TagscaleError

FIELDS = ("track_id", "uri", "tags", "split")
REQUIRED = ("track_id", "uri")
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


class CatalogError(TagscaleError):
    """The catalog as a whole cannot be used; the message says why."""


class BadRow(ValueError):
    """One catalog row that cannot be used; the message is its dead-letter reason."""


@dataclasses.dataclass(frozen=True)
class Track:
    track_id: str
    uri: str
    tags: tuple[str, ...] = ()
    split: str | None = None  # the catalog's split; None: featurize's hash split


def catalog_format(path: str) -> str:
    """'csv', 'jsonl' or 'parquet', from the file extension."""
    for extension, name in FORMATS.items():
        if path.lower().endswith(extension):
            return name
    raise CatalogError(f"{path}: unknown catalog format; use .csv, .jsonl or .parquet")


def utf8_text(field: str, value) -> str:
    """``value`` as text that is valid UTF-8; :class:`BadRow` naming ``field`` when it is not.

    Catalogs are decoded with ``surrogateescape`` so a file name's exact bytes survive; a
    track_id or tag is written to Parquet and TFRecords as UTF-8, so its bytes must be valid.
    """
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as error:
            raise BadRow(
                f"{field} is not valid UTF-8 ({error.reason} at byte {error.start}): {bytes(value)!r}"
            ) from error
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        # surrogateescape restores a catalog's own bytes; a lone surrogate of other origin
        # (JSON's "\ud800") has none and shows escaped.
        shown = text.encode("utf-8", "surrogateescape" if _escaped_bytes(text) else "backslashreplace")
        raise BadRow(f"{field} is not valid UTF-8 (byte {error.start}): {shown!r}") from error
    return text


def _escaped_bytes(text: str) -> bool:
    """Whether every surrogate in ``text`` is a byte kept by ``surrogateescape`` (U+DC80-U+DCFF)."""
    return all(0xDC80 <= ord(char) <= 0xDCFF for char in text if 0xD800 <= ord(char) <= 0xDFFF)


def split_tags(value) -> tuple[str, ...]:
    """Tags from a ';'-separated string or a list; blanks dropped, order and case kept, each
    checked and spelled (NFC) by :func:`pipelines.names.tag_name`."""
    if value is None:
        return ()
    if isinstance(value, (bytes, bytearray)):
        value = utf8_text("tags", value)
    if isinstance(value, str):
        value = value.split(";")
    elif not isinstance(value, (list, tuple)):
        raise BadRow(f"tags must be a ';'-separated string or a list, got {type(value).__name__}")
    wrong = [type(tag).__name__ for tag in value if not isinstance(tag, (str, bytes, bytearray))]
    if wrong:
        raise BadRow(f"tags must be a list of text, got a {wrong[0]} in it")
    try:
        # The tag vocabulary is a file of one tag per line: a newline would split a tag in two,
        # and other control characters would reach terminals and reports as they are.
        tags = [names.tag_name(utf8_text("tag", tag)) for tag in value]
    except names.BadName as error:
        raise BadRow(str(error)) from None
    return tuple(dict.fromkeys(tag for tag in tags if tag))


def _field(record: dict, field: str, types: tuple) -> object:
    """``record[field]`` when it is of one of ``types`` (or missing); a :class:`BadRow` naming the
    field when a JSONL or Parquet row gives it another type (an object, a list, a number...)."""
    value = record.get(field)
    if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
        kind = "text or a whole number" if int in types else "text"
        raise BadRow(f"{field} must be {kind}, got {type(value).__name__}")
    return value


def to_track(record: dict) -> Track:
    """Validate one parsed row; :class:`BadRow` when track_id or uri is missing, empty or of the
    wrong type, when the track_id is longer than :data:`pipelines.names.MAX_ID_CHARS`, when
    the uri holds a NUL (no file can be named so), or when the track_id or a tag is not valid
    UTF-8 (the uri may be any file name)."""
    # A track_id may be a number (a Parquet int column of clip ids); a uri only text.
    raw = {"track_id": _field(record, "track_id", (str, bytes, int)), "uri": _field(record, "uri", (str, bytes))}
    for field in REQUIRED:
        value = raw[field]
        if value is None or not str(value).strip():
            raise BadRow(f"missing {field}")
    track_id = utf8_text("track_id", raw["track_id"]).strip()
    try:
        names.track_id(track_id)
    except names.BadName as error:
        raise BadRow(str(error)) from None
    uri = (os.fsdecode(raw["uri"]) if isinstance(raw["uri"], bytes) else raw["uri"]).strip()
    if "\0" in uri:
        raise BadRow("uri contains a NUL byte, which no file name can hold")
    split = str(_field(record, "split", (str,)) or "").strip() or None
    if split is not None and split not in SPLITS:
        raise BadRow(f"split must be one of {', '.join(SPLITS)} or empty, got {split!r}")
    return Track(track_id, uri, split_tags(record.get("tags")), split)


def parse_json_line(line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise BadRow(f"invalid JSON: {error.msg} at column {error.colno}") from error
    if not isinstance(record, dict):
        raise BadRow("a JSONL row must be an object with track_id, uri, tags")
    return record


def check_catalog(path: str) -> tuple[str, tuple[str, ...]]:
    """Open the catalog and check its header or schema before a pipeline starts.

    Returns
    -------
    (format, header)
        ``header`` is the CSV column order (empty for JSONL and Parquet).

    Raises
    ------
    CatalogError
        The catalog is missing, empty, in an unknown format or lacks track_id / uri.
    """
    from apache_beam.io.filesystems import FileSystems

    fmt = catalog_format(path)
    try:
        if not FileSystems.match([path])[0].metadata_list:
            raise CatalogError(f"{path}: catalog not found")
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            if fmt == "parquet":
                return fmt, _check_parquet(path, handle)
            first = handle.readline().decode("utf-8-sig")
    except CatalogError:
        raise
    except UnicodeDecodeError as error:
        raise CatalogError(f"{path}: not UTF-8 text ({error.reason})") from error
    except Exception as error:  # filesystem backends raise many types
        raise CatalogError(f"{path}: cannot read catalog: {error}") from error
    if not first.strip():
        raise CatalogError(f"{path}: catalog is empty")
    if fmt == "csv":
        try:
            header = tuple(field.strip() for field in next(csv.reader([first])))
        except csv.Error as error:
            raise CatalogError(f"{path}: unreadable CSV header: {error}") from error
        missing = [field for field in REQUIRED if field not in header]
        if missing or any(field not in FIELDS for field in header):
            raise CatalogError(
                f"{path}: CSV header must be track_id,uri[,tags][,split]; got {','.join(header) or '(nothing)'}"
            )
        return fmt, header
    try:
        record = parse_json_line(first)
    except BadRow as error:
        raise CatalogError(f"{path}: line 1: {error}") from error
    missing = [field for field in REQUIRED if field not in record]
    if missing:
        raise CatalogError(f"{path}: line 1 lacks {', '.join(missing)}")
    return fmt, ()


def _check_parquet(path: str, handle) -> tuple[str, ...]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(handle)  # reads the footer only, not the whole catalog
    except pyarrow.ArrowException as error:
        raise CatalogError(f"{path}: not a Parquet file ({error})") from error
    missing = [field for field in REQUIRED if field not in schema.names]
    if missing:
        raise CatalogError(f"{path}: Parquet catalog lacks column(s) {', '.join(missing)}")
    return ()


def iter_rows(path: str):
    """Stream a catalog's rows as ``(row_number, record)``; a row that does not parse is
    yielded as ``(row_number, BadRow)``. Row numbers count data rows from 1."""
    import codecs

    from apache_beam.io.filesystems import FileSystems

    fmt, header = check_catalog(path)
    with FileSystems.open(path, compression_type="uncompressed") as handle:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            number = 0
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=10_000):
                for record in batch.to_pylist():
                    number += 1
                    yield number, record
            return
        # surrogateescape keeps the exact bytes of a non-UTF-8 file name, so the file opens.
        if fmt == "csv":  # decoded in C, lines as the csv module wants them (newline="")
            yield from _csv_rows(io.TextIOWrapper(handle, "utf-8-sig", "surrogateescape", newline=""), header)
            return
        lines = codecs.iterdecode(handle, "utf-8-sig", errors="surrogateescape")  # split at "\n" only
        for number, line in enumerate((line for line in lines if line.strip()), 1):
            try:
                yield number, parse_json_line(line)
            except BadRow as error:
                yield number, error


def _csv_rows(lines, header: tuple[str, ...]):
    """``(row_number, record or BadRow)`` for each non-blank CSV row after the header.

    A field over the csv module's size limit (131,072 characters) is one bad row: the reader
    drops the rest of that line and goes on with the next, so the other rows are still read.
    """
    reader = csv.reader(lines)
    next(reader)  # the header, checked by check_catalog
    number, width = 0, len(header)
    while True:
        try:
            for fields in reader:  # one loop over the reader, re-entered after a bad row
                if not "".join(fields).strip():  # a blank row (any(field.strip()), at a third of the cost)
                    continue
                number += 1
                if len(fields) == width:
                    yield number, dict(zip(header, fields))
                else:
                    yield number, BadRow(f"expected {width} fields ({','.join(header)}), got {len(fields)}")
            return
        except csv.Error as error:
            number += 1
            yield number, BadRow(f"unreadable CSV row: {error}")


def read_catalog(path: str) -> list[Track]:
    """Read a whole catalog into memory (small catalogs, tests, tools; pipelines use
    :class:`ReadCatalog`). A bad row raises :class:`CatalogError` naming the row."""
    tracks = []
    for number, record in iter_rows(path):
        try:
            if isinstance(record, BadRow):
                raise record
            tracks.append(to_track(record))
        except BadRow as error:
            raise CatalogError(f"{path}: row {number}: {error}") from error
    return tracks


def resolve_uri(uri: str, base: str) -> str:
    """A relative local path ``uri`` made absolute against the directory ``base``; an absolute
    path or a URL (``gs://``, ``file://``) as it is."""
    return uri if "://" in uri or os.path.isabs(uri) else os.path.abspath(os.path.join(base, uri))


def parse_rows(path: str, base: str | None = None, skip=None):
    """Beam body of :class:`ReadCatalog`: ``(track_id, (row, Track))`` or a dead-letter record.
    With ``base``, a track's relative local uri is made absolute against it; with ``skip``, rows
    it has are dropped before they are checked (counted as ``skipped`` outputs). Rows read are
    shown on stderr every few seconds (a large catalog takes minutes)."""
    from pipelines import skip as skips
    from pipelines.tag_progress import Ticker

    ticker = Ticker("catalog")
    rows = iter_rows(path) if skip is None else skips.untagged_rows(iter_rows(path), skip)
    for item in rows:
        if isinstance(item, beam.pvalue.TaggedOutput):
            ticker.add("rows read", item.value)
            yield item
            continue
        number, record = item
        ticker.add("rows read")
        try:
            if isinstance(record, BadRow):
                raise record
            track = to_track(record)
            if base is not None:
                track = dataclasses.replace(track, uri=resolve_uri(track.uri, base))
        except BadRow as error:
            beam.metrics.Metrics.counter("catalog", "bad_rows").inc()
            raw = record if isinstance(record, dict) else {}
            track_id, uri = (raw.get(field) for field in ("track_id", "uri"))
            yield beam.pvalue.TaggedOutput(
                dead_letter.TAG,
                dead_letter.record(  # a field of the wrong type is named in the error, not shown
                    track_id=_shown(track_id)[: names.MAX_ID_CHARS],
                    uri=_shown(uri),
                    stage="catalog",
                    error=f"row {number}: {error}",
                ),
            )
            ticker.add("bad rows")
            continue
        yield track.track_id, (number, track)
    ticker.finish()


def _shown(value) -> str:
    """A raw catalog field as a dead-letter row shows it: text as it is, anything else empty."""
    if isinstance(value, (bytes, bytearray)):
        return os.fsdecode(bytes(value))
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""


def read_chunks(path: str, base: str | None = None, skip=None):
    """Beam body of :class:`ReadCatalog`: :func:`parse_rows` with repeated track_ids made dead
    letters and the tracks packed in chunks (:func:`pipelines.catalog_unique.chunks`)."""
    from pipelines import catalog_unique
    from runtime.machine import frozen_heap

    with frozen_heap():  # the rows are millions of short-lived objects
        yield from catalog_unique.chunks(parse_rows(path, base, skip))


def unchunk(keyed):
    """``(chunk number, [packed chunk])`` -> its :class:`Track` s, in catalog order."""
    from pipelines import catalog_unique

    _, blobs = keyed
    for blob in blobs:
        for track_id, uri, tags, split in catalog_unique.unpacked(blob):
            yield Track(track_id, uri, tags, split)


class ReadCatalog(beam.PTransform):
    """Read a catalog into :class:`Track` elements; bad and duplicate rows go to the dead letter.

    Returns ``{'tracks': ..., 'dead_letter': ..., 'skipped': ...}``. The catalog is checked at
    construction, so a broken catalog fails before any work starts. One worker streams the file
    (rows are small: millions read in about a minute) and drops repeated track_ids as it reads;
    a grouping of the tracks in small chunks then spreads them over all workers
    (:mod:`pipelines.catalog_unique`). With ``skip`` (``tag --incremental``'s
    :class:`pipelines.skip.AlreadyTagged`), rows whose track_id it has are dropped as they are
    read; ``skipped`` holds how many, as integers to sum (empty without ``skip``).
    """

    def __init__(self, path: str, skip=None):
        super().__init__()
        check_catalog(path)
        # A relative path (the catalog's, a row's uri) names a file from the directory the
        # command runs in, wherever the workers run: made absolute here and as rows are read.
        self._base = os.getcwd()
        self._path = resolve_uri(path, self._base)
        self._skip = skip

    def expand(self, pbegin):
        chunks = (
            pbegin
            | "CatalogPath" >> beam.Create([self._path])
            | "ParseRows"
            >> beam.FlatMap(read_chunks, self._base, self._skip).with_outputs(dead_letter.TAG, "skipped", main="chunks")
        )
        tracks = chunks.chunks | "GroupByChunk" >> beam.GroupByKey() | "Unchunk" >> beam.FlatMap(unchunk)
        return {"tracks": tracks, dead_letter.TAG: chunks[dead_letter.TAG], "skipped": chunks.skipped}
