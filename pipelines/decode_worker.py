"""In-process decoders under a timeout: libsndfile runs in a helper process that can be killed.

libsndfile and soxr cannot be interrupted from Python, so a file that makes them spin would
hold a pipeline worker forever. Each thread that decodes keeps one helper process
(``python -m pipelines.decode_worker``, which imports only numpy, soundfile and soxr) and sends
it one request at a time over a pipe; when a decode runs past its timeout the helper is killed
and the next request starts a fresh one. The helper exits when its parent goes away (its stdin
closes), and holds none of the parent's files (``close_fds``), so a killed run leaves nothing
behind that keeps its output locked.
"""

from __future__ import annotations

import atexit
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time

_HEADER = struct.Struct("<Q")
READY = b"ready\n"
STARTUP_TIMEOUT_S = 120.0
_local = threading.local()
_live: set = set()  # every helper still running, so that exit can reap them
_live_lock = threading.Lock()


class WorkerTimeout(Exception):
    """The request ran past its timeout; the helper process was killed."""


def _send(stream, payload) -> None:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytearray:
    buffer = bytearray(size)
    view, done = memoryview(buffer), 0
    while done < size:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise WorkerTimeout()
        count = os.readv(fd, [view[done:]])
        if not count:
            raise EOFError("decode helper exited")
        done += count
    return buffer


def _widen_pipe(stream) -> None:
    """1 MiB pipe buffers instead of 64 KiB: a decoded track is tens of MB."""
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), 1031, 1 << 20)  # F_SETPIPE_SZ (Linux)
    except (OSError, AttributeError, ImportError):
        pass


class Worker:
    """One helper process; :meth:`call` runs ``pipelines.audio.NAME(**kwargs)`` in it."""

    def __init__(self):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.environ = dict(os.environ)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.decode_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        with _live_lock:
            _live.add(self)
        _widen_pipe(self.process.stdout)
        # Start-up (imports) is not the decode's time: wait for the helper to say it is ready.
        try:
            if _read_exactly(self.process.stdout.fileno(), len(READY), time.monotonic() + STARTUP_TIMEOUT_S) != READY:
                raise EOFError("decode helper did not start")
        except BaseException:
            self.kill()
            raise

    def call(self, name: str, kwargs: dict, timeout_s: float):
        _send(self.process.stdin, (name, kwargs))
        deadline = time.monotonic() + timeout_s
        fd = self.process.stdout.fileno()
        (size,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size, deadline))
        status, value = pickle.loads(_read_exactly(fd, size, deadline))
        if status == "error":
            raise value
        return value

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        with _live_lock:
            _live.discard(self)

    def close(self, timeout_s: float = 5.0) -> None:
        """Let the helper exit on its own (its stdin closes) and reap it; kill it if it hangs."""
        try:
            self.process.stdin.close()
            self.process.wait(timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


def call(name: str, timeout_s: float, **kwargs):
    """Run ``pipelines.audio.NAME(**kwargs)`` in this thread's helper; :class:`WorkerTimeout`
    after ``timeout_s`` seconds (the helper is killed; the next call starts another)."""
    worker = getattr(_local, "worker", None)
    try:
        if worker is not None and (worker.process.poll() is not None or worker.environ != os.environ):
            worker.kill()  # exited, or started with another environment (credentials, endpoints)
            worker = None
        if worker is None:
            worker = _local.worker = Worker()
        return worker.call(name, kwargs, timeout_s)
    except (WorkerTimeout, EOFError, BrokenPipeError):
        if worker is not None:
            worker.kill()
        _local.worker = None
        raise


@atexit.register
def close_all() -> None:
    """Reap every helper before this process exits.

    A helper that outlives its parent is re-parented and reaped by init, so its CPU time would
    be missing from the parent's accounting (``time``, ``getrusage(RUSAGE_CHILDREN)``, a batch
    scheduler's): reaping here bills the decoding to the run that asked for it.
    """
    with _live_lock:
        workers = list(_live)
    for worker in workers:
        worker.close()


def serve() -> None:
    """The helper's loop: a request in on stdin, the result (or the exception) out on stdout."""
    import soundfile  # noqa: F401  (imported before READY, so start-up is not billed to a decode)
    import soxr  # noqa: F401

    from pipelines import audio

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        _no_credentials_for_the_emulator()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(READY)
    stdout.flush()
    while True:
        header = stdin.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return  # the parent went away
        name, kwargs = pickle.loads(stdin.read(_HEADER.unpack(header)[0]))
        try:
            result = ("ok", getattr(audio, name)(**kwargs))
        except Exception as error:  # the parent decides what a failure means
            result = ("error", error if _picklable(error) else audio.DecodeError(f"{type(error).__name__}: {error}"))
        _send(stdout, result)


def _no_credentials_for_the_emulator() -> None:
    """A local GCS emulator takes anonymous requests: skip Beam's credential lookup, which
    otherwise retries for ~25 s in a helper before it reads its first gs:// file."""
    from apache_beam.internal.gcp import auth

    auth.set_running_in_gce(worker_executing_project=None)
    auth._Credentials._credentials_init = True
    auth._Credentials._credentials = None


def _picklable(error: Exception) -> bool:
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return False
    return True


if __name__ == "__main__":
    serve()
