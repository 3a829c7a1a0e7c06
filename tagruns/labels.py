"""labels: a curator's decisions on tags (yes / no per track and tag), kept in a folder.

    tagscale explore --tags RUN --labels DIR        (writes decisions)
    tagscale probe train --tags RUN --labels DIR    (and calibrate, evaluate: read them)

Each decision is one small JSON file ``DIR/decisions/<time>-<pid>-<random>.json`` holding
``{"track_id", "tag", "verdict": "yes"|"no", "run", "model", "time"}``. Reading DIR gives the
latest verdict per (track_id, tag): file names start with the write time in nanoseconds, so
sorting them sorts the decisions. The tag run itself is never touched.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import secrets
import stat
import threading
import time

from pipelines import names
from runtime.errors import TagscaleError

DECISIONS = "decisions"
VERDICTS = ("yes", "no")
MAX_TAG_CHARS = 100  # a tag is a short name; the bound keeps one request from filling the disk
# A decision is a few hundred bytes; the longest id and tag, of astral characters JSON-escaped
# to 12 bytes each, take 7.2 KiB, which leaves room for the run's path. A file over this is not
# a decision, whatever it is.
MAX_DECISION_BYTES = 16384


def check_tag(tag) -> str:
    """A tag name a curator may give, as stored; :class:`TagscaleError` when it is unusable.

    The catalog's own rules apply (:func:`pipelines.names.tag_name`: no control, format or
    separator characters, no name of a view's column, blanks around it dropped, NFC), and a
    ``;`` is refused because catalogs list a track's tags ``;``-separated."""
    from pipelines import catalog

    if not isinstance(tag, str):
        raise TagscaleError(f"a tag must be text, got {type(tag).__name__}")
    try:
        found = catalog.split_tags([tag])
    except catalog.BadRow as error:
        raise TagscaleError(str(error)) from None
    if len(found) != 1:
        raise TagscaleError("a tag must not be empty")
    if ";" in found[0]:
        raise TagscaleError(f"tag {found[0]!r} contains ';' (catalogs separate tags with it)")
    if len(found[0]) > MAX_TAG_CHARS:
        raise TagscaleError(f"a tag has at most {MAX_TAG_CHARS} characters, got {len(found[0])}")
    return found[0]


def check_decision(track_id, tag, verdict) -> tuple[str, str, str]:
    """``(track_id, tag, verdict)`` checked; :class:`TagscaleError` naming what is wrong."""
    # The catalog's own limit (a longer id is in no run).
    if not isinstance(track_id, str) or not track_id or len(track_id) > names.MAX_ID_CHARS:
        raise TagscaleError(f"track_id must be text of 1 to {names.MAX_ID_CHARS} characters")
    if not track_id.isascii() and any(0xD800 <= ord(char) <= 0xDFFF for char in track_id):
        raise TagscaleError("track_id holds a lone surrogate (not Unicode text)")
    if verdict not in VERDICTS:
        raise TagscaleError(f"verdict must be 'yes' or 'no', got {verdict!r}")
    return track_id, check_tag(tag), verdict


def read_small_file(path: str, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (a link to one is followed), at most ``limit``.

    Opened without blocking, so a FIFO planted under a ``.json`` name cannot hang the reader,
    and checked to be a regular file before any byte is read (a link to ``/dev/zero`` is a
    device); :class:`OSError` (with a ``strerror`` saying why) for anything else, or a file
    over ``limit`` bytes."""
    handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise OSError(0, "not a regular file")
        data = b""
        while len(data) <= limit:
            chunk = os.read(handle, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(handle)
    if len(data) > limit:
        raise OSError(0, f"over {limit} bytes")
    return data


class LabelStore:
    """The decisions in one local folder: append from any number of threads and processes.

    Why one file per decision, written under a temporary name and then renamed with
    :func:`os.replace`: a rename within one folder is atomic on POSIX and Windows, so a reader
    sees each decision whole or not at all, and two writers (two browser tabs, two explorer
    processes) never share a file, so they need no lock. An append to one shared file would
    need ``fcntl`` locking, which Windows lacks and network file systems honour unreliably, and
    a crash mid-append would leave half a line that every later reader trips over.
    """

    _clock_lock = threading.Lock()
    _last_ns = 0

    def __init__(self, directory: str, *, create: bool = False):
        if "://" in directory:
            raise TagscaleError(f"a labels folder is local, got {directory}")
        self.directory = os.path.abspath(directory)
        self.path = os.path.join(self.directory, DECISIONS)
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise TagscaleError(f"labels {directory} is a file, not a folder of decisions")
        if create:
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as error:
                raise TagscaleError(f"cannot create labels folder {directory}: {error.strerror or error}") from None
        self._read: dict[str, dict] = {}  # file name -> decision, so a rescan reads only new files
        self._lock = threading.Lock()

    @classmethod
    def _stamp(cls) -> int:
        """Nanoseconds since the epoch, strictly increasing within this process, so two decisions
        from one process always sort in the order they were made."""
        with cls._clock_lock:
            cls._last_ns = max(time.time_ns(), cls._last_ns + 1)
            return cls._last_ns

    def append(self, track_id: str, tag: str, verdict: str, *, run: str, model: dict) -> dict:
        """Write one decision atomically; return it as stored."""
        track_id, tag, verdict = check_decision(track_id, tag, verdict)
        stamp = self._stamp()
        moment = datetime.datetime.fromtimestamp(stamp / 1e9, datetime.timezone.utc)
        record = {
            "track_id": track_id,
            "tag": tag,
            "verdict": verdict,
            "run": run,
            "model": {"name": model.get("name"), "version": model.get("version")},
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        name = f"{stamp:020d}-{os.getpid()}-{secrets.token_hex(4)}.json"
        temporary = os.path.join(self.path, f".{name}.tmp")  # the reader skips names starting with "."
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(record))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, os.path.join(self.path, name))
        except OSError as error:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise TagscaleError(f"cannot write a decision to {self.directory}: {error.strerror or error}") from None
        return record

    def decisions(self) -> list[dict]:
        """Every decision, oldest first (rereads only the files written since the last call)."""
        with self._lock:
            try:
                names = sorted(n for n in os.listdir(self.path) if n.endswith(".json") and not n.startswith("."))
            except FileNotFoundError:
                names = []
            except OSError as error:
                raise TagscaleError(f"cannot read labels {self.directory}: {error.strerror or error}") from None
            for name in names:
                if name not in self._read:
                    self._read[name] = self._load(name)
            return [self._read[name] for name in names]

    def _load(self, name: str) -> dict:
        file = os.path.join(self.path, name)
        try:
            record = json.loads(read_small_file(file, MAX_DECISION_BYTES).decode("utf-8"))
            check_decision(record["track_id"], record["tag"], record["verdict"])
            record["tag"] = check_tag(record["tag"])  # a copied-in file spelled in NFD is one tag with NFC
        except (OSError, ValueError, KeyError, TypeError, TagscaleError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            raise TagscaleError(f"{file} is not a decision: {(reason.splitlines() or [''])[0]}") from None
        return record

    def latest(self) -> dict[tuple[str, str], dict]:
        """(track_id, tag) -> its latest decision."""
        return {(record["track_id"], record["tag"]): record for record in self.decisions()}


def label_sets(latest: dict[tuple[str, str], dict]) -> dict[str, set[str]]:
    """Latest decisions as track_id -> tags said yes to, the form of a labels CSV.

    A track with only "no" verdicts is still a key (with an empty set): the readers take a tag's
    negatives to be the labelled tracks without it, so an explicit "no" counts as a negative."""
    labels: dict[str, set[str]] = {}
    for (track_id, tag), record in sorted(latest.items()):
        tags = labels.setdefault(track_id, set())
        if record["verdict"] == "yes":
            tags.add(tag)
    return labels


def read_labels(path: str) -> dict[str, set[str]]:
    """Labels for probe, calibrate and evaluate: a labels folder (the latest decisions) or a
    CSV ``track_id,tag`` of positives (:func:`read_labels_csv`), as track_id -> tags."""
    if "://" not in path and os.path.isdir(path):
        labels = label_sets(LabelStore(path).latest())
        if not labels:
            raise TagscaleError(f"labels folder {path} has no decisions (expected {DECISIONS}/*.json)")
        return labels
    return read_labels_csv(path)


def read_labels_csv(path: str) -> dict[str, set[str]]:
    """``labels.csv`` (``track_id,tag``, one row per positive) -> track_id -> its tags.

    The labelled tracks are the keys; a tag's negatives are the labelled tracks without it.
    A file as spreadsheets save it (a UTF-8 byte order mark, CRLF line ends) reads the same;
    each tag goes through :func:`check_tag`, as a decision's does.
    """
    from pipelines.storage import fileio

    try:
        if "://" not in path and os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
            raise OSError(0, "not a regular file")
        text = fileio.read_text(path).removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        raise TagscaleError(f"{path}: labels are not UTF-8 text ({error.reason})") from None
    except Exception as error:  # a missing file reads as an IOError of the file system
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise TagscaleError(f"cannot read labels {path}: {(reason.splitlines() or [''])[0]}") from None
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows or [cell.strip() for cell in rows[0][:2]] != ["track_id", "tag"]:
        raise TagscaleError(f"{path}: expected a header track_id,tag")
    labels: dict[str, set[str]] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise TagscaleError(f"{path}, line {number}: expected track_id,tag, got {','.join(row)!r}")
        try:
            tag = check_tag(row[1])
        except TagscaleError as error:
            raise TagscaleError(f"{path}, line {number}: {error}") from None
        labels.setdefault(row[0].strip(), set()).add(tag)
    if not labels:
        raise TagscaleError(f"{path} has no labels")
    return labels
