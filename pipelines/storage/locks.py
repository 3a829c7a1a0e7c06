"""One run per output: a lock file ``OUTPUT/.tagscale.lock`` naming its holder (host, pid, start).

Locally the lock is an ``fcntl.flock`` on that file: the kernel drops it when the holder
dies, however it dies, so a lock whose file still names a holder but which nobody holds was
left by a killed run and is taken over (with a message). On gs:// it is an object created
with a generation-match precondition (``if_generation_match=0``: create only if absent); a
lock object is stale when its holder ran on this host and that pid is gone, or when it is older
than :data:`STALE_AFTER_S`; it is then replaced with a precondition on its generation, so
two runs cannot both take it over.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import time

from pipelines.storage import fileio
from runtime.errors import TagscaleError

LOCK_NAME = ".tagscale.lock"
STALE_AFTER_S = float(os.environ.get("TAGSCALE_LOCK_STALE_AFTER_S", 48 * 3600))  # gs:// only


class LockHeld(TagscaleError):
    """Another run holds the output; the message names it."""


def holder_info(command: str) -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "start_unix": time.time(),
        "command": command,
    }


def describe(holder: dict) -> str:
    return (
        f"tagscale {holder.get('command', '?')} on host {holder.get('host')}, "
        f"pid {holder.get('pid')}, started {holder.get('start')}"
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def is_stale(holder: dict, *, now: float | None = None) -> bool:
    """A remote lock's holder is gone: same host and its pid is not alive, or it is too old."""
    now = time.time() if now is None else now
    if holder.get("host") == socket.gethostname() and not pid_alive(int(holder.get("pid", -1))):
        return True
    return now - float(holder.get("start_unix", 0)) > STALE_AFTER_S


def _parse(text: str) -> dict:
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _say(message: str) -> None:
    print(f"tagscale: {message}", file=sys.stderr, flush=True)


class OutputLock:
    """``with OutputLock(output, "tag"):`` holds ``output`` for one run; :class:`LockHeld` when taken."""

    def __init__(self, output: str, command: str):
        self.output = output
        self.path = fileio.join(output, LOCK_NAME)
        self.holder = holder_info(command)
        self._fd = None
        self._generation = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if "://" in self.output and not self.output.startswith("file://"):
            self._acquire_object()
        else:
            self._acquire_file()

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            os.ftruncate(self._fd, 0)  # an empty lock file: released cleanly
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        elif self._generation is not None:
            from google.api_core import exceptions

            try:
                self._blob().delete(if_generation_match=self._generation)
            except (exceptions.NotFound, exceptions.PreconditionFailed):
                pass  # taken over as stale meanwhile: it is no longer ours to delete
            self._generation = None

    # ------------------------------------------------------------------------ local file

    def _acquire_file(self) -> None:
        import fcntl

        try:
            os.makedirs(self.output, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:  # a read-only or foreign folder: the user's to fix, so one line
            raise TagscaleError(f"cannot write to {self.output}: {error.strerror or error}") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            previous = _parse(os.pread(fd, 65536, 0).decode("utf-8", "replace"))
            os.close(fd)
            raise LockHeld(f"{self.output} is in use by {describe(previous)} (lock {self.path})") from None
        previous = os.pread(fd, 65536, 0).decode("utf-8", "replace")
        if previous.strip():
            _say(f"taking over the stale lock of {describe(_parse(previous))}: that run died without releasing it")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self.holder).encode("utf-8"), 0)
        os.fsync(fd)
        self._fd = fd

    # ---------------------------------------------------------------------- gs:// object

    def _blob(self):
        from google.cloud import storage

        bucket, _, name = self.path.split("://", 1)[1].partition("/")
        return storage.Client().bucket(bucket).blob(name)

    def _acquire_object(self) -> None:
        from google.api_core import exceptions

        blob = self._blob()
        payload = json.dumps(self.holder)
        try:
            blob.upload_from_string(payload, if_generation_match=0)
        except exceptions.PreconditionFailed:
            blob.reload()
            generation = blob.generation
            previous = _parse(blob.download_as_text(if_generation_match=generation))
            if not is_stale(previous):
                raise LockHeld(f"{self.output} is in use by {describe(previous)} (lock {self.path})") from None
            try:
                blob.upload_from_string(payload, if_generation_match=generation)
            except exceptions.PreconditionFailed:
                raise LockHeld(
                    f"{self.output}: another run took over the stale lock first (lock {self.path})"
                ) from None
            _say(
                f"taking over the stale lock of {describe(previous)}: "
                f"that run is gone or older than {STALE_AFTER_S / 3600:g} h"
            )
        self._generation = blob.generation
