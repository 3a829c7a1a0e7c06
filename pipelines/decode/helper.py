"""In-process decoders under a timeout: libsndfile runs in a helper process that can be killed.

libsndfile and soxr cannot be interrupted from Python, so a file that makes them spin would
hold a pipeline worker forever. Each thread that decodes keeps one helper process
(``python -m pipelines.decode.helper``, which imports only numpy, soundfile and soxr) and sends
it one request at a time over a pipe; when a decode runs past its timeout the helper is killed
and the next request starts a fresh one. The helper exits when its parent goes away (its stdin
closes), and holds none of the parent's files (``close_fds``), so a killed run leaves nothing
behind that keeps its output locked.

The helper reads untrusted files, so the parent treats what it writes as data only, never as
code: no pickles either way. A request is a length-prefixed JSON object (the keyword arguments
of :func:`pipelines.decode.read.decode_with_soundfile`); a response is a status byte and a payload
length, then either the raw little-endian float32 samples or the UTF-8 reason of a failure.
A response that breaks these rules counts as a crash: the helper is killed.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import struct
import subprocess
import sys
import threading
import time

import numpy as np

from pipelines.decode import read as audio_read

_REQUEST = struct.Struct("<I")  # byte length of the JSON request that follows
_RESPONSE = struct.Struct("<BQ")  # status, byte length of the payload that follows
OK, FAILED, FINAL, TRANSIENT = 0, 1, 2, 3  # samples; DecodeError; DecodeLimit; TransientError
MAX_REQUEST_BYTES = 1 << 20
MAX_REASON_BYTES = 1 << 16
READY = b"ready\n"
STARTUP_TIMEOUT_S = 120.0
_local = threading.local()
_live: set = set()  # every helper still running, so that exit can reap them
_live_lock = threading.Lock()


class WorkerTimeout(Exception):
    """The request ran past its timeout; the helper process was killed."""


class MalformedResponse(EOFError):
    """The helper wrote something that is not a valid response; handled as a crash."""


def read_response(fd: int, deadline: float | None, max_samples: int) -> np.ndarray:
    """Read one response from the helper's stdout ``fd``: the samples, or the failure raised.

    Parameters
    ----------
    fd : int
        The read end of the helper's stdout.
    deadline : float or None
        ``time.monotonic()`` after which :class:`WorkerTimeout` is raised.
    max_samples : int
        Most samples the request can yield; a longer payload is refused before it is read.

    Returns
    -------
    np.ndarray, shape (n_samples,), float32

    Raises
    ------
    pipelines.decode.read.DecodeError, pipelines.decode.read.DecodeLimit, pipelines.decode.read.TransientError
        The failure the helper reported, its reason as the message.
    MalformedResponse
        An unknown status, or a payload of a length that status cannot have.
    """
    status, size = _RESPONSE.unpack(_read_exactly(fd, _RESPONSE.size, deadline))
    if status == OK:
        if size % 4 or size > 4 * max_samples:
            raise MalformedResponse(f"decode helper sent {size} bytes of samples (at most {4 * max_samples})")
        return np.frombuffer(_read_exactly(fd, size, deadline), dtype="<f4").astype(np.float32, copy=False)
    errors = {FAILED: audio_read.DecodeError, FINAL: audio_read.DecodeLimit, TRANSIENT: audio_read.TransientError}
    if status not in errors or size > MAX_REASON_BYTES:
        raise MalformedResponse(f"decode helper sent status {status} with {size} bytes")
    raise errors[status](bytes(_read_exactly(fd, size, deadline)).decode("utf-8", "replace"))


def _write_response(stream, status: int, payload: bytes | memoryview) -> None:
    stream.write(_RESPONSE.pack(status, len(payload)))
    stream.write(payload)
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
    """One helper process; :meth:`decode` runs ``pipelines.decode.read.decode_with_soundfile`` in it."""

    def __init__(self):
        # The folder that holds the ``pipelines`` package this module came from (three levels up).
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.environ = dict(os.environ)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.decode.helper"],
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

    def decode(self, kwargs: dict, timeout_s: float) -> np.ndarray:
        from model import dsp

        request = json.dumps(kwargs).encode("utf-8")
        self.process.stdin.write(_REQUEST.pack(len(request)) + request)
        self.process.stdin.flush()
        # A little over the requested duration: resampling may round the length up.
        max_samples = int(kwargs["max_duration_s"] * dsp.SAMPLE_RATE) + dsp.SAMPLE_RATE
        return read_response(self.process.stdout.fileno(), time.monotonic() + timeout_s, max_samples)

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


def decode(timeout_s: float, **kwargs) -> np.ndarray:
    """Run ``pipelines.decode.read.decode_with_soundfile(**kwargs)`` in this thread's helper;
    :class:`WorkerTimeout` after ``timeout_s`` seconds (the helper is killed; the next call
    starts another). ``kwargs`` must be JSON: a uri, max_duration_s and max_bytes."""
    worker = getattr(_local, "worker", None)
    try:
        if worker is not None and (worker.process.poll() is not None or worker.environ != os.environ):
            worker.kill()  # exited, or started with another environment (credentials, endpoints)
            worker = None
        if worker is None:
            worker = _local.worker = Worker()
        return worker.decode(kwargs, timeout_s)
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
    """The helper's loop: a JSON request in on stdin, samples (or a failure) out on stdout."""
    import soundfile  # noqa: F401  (imported before READY, so start-up is not billed to a decode)
    import soxr  # noqa: F401

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(READY)
    stdout.flush()
    while True:
        header = stdin.read(_REQUEST.size)
        if len(header) < _REQUEST.size:
            return  # the parent went away
        (size,) = _REQUEST.unpack(header)
        if size > MAX_REQUEST_BYTES:
            return  # not our parent speaking: stop rather than guess where the next request starts
        try:
            samples = audio_read.decode_with_soundfile(**json.loads(stdin.read(size)))
        except Exception as error:  # the parent decides what a failure means
            if isinstance(error, audio_read.DecodeError):
                status, reason = (FINAL if isinstance(error, audio_read.DecodeLimit) else FAILED), str(error)
            elif isinstance(error, audio_read.TransientError):
                status, reason = TRANSIENT, str(error)
            else:
                status, reason = FAILED, f"{type(error).__name__}: {error}"
            _write_response(stdout, status, reason.encode("utf-8", "surrogateescape")[:MAX_REASON_BYTES])
        else:
            _write_response(stdout, OK, memoryview(np.ascontiguousarray(samples, dtype="<f4")).cast("B"))


if __name__ == "__main__":
    serve()
