"""Quiet commands: the libraries' C++ log lines and decoder chatter kept off the terminal.

TensorFlow and XLA log through absl before anything initializes absl's logging, so their
lines ("I0000 ... oneDNN custom operations are on", "E0000 ... failed call to cuInit") go
straight to file descriptor 2 whatever ``TF_CPP_MIN_LOG_LEVEL`` says, and libmpg123 writes
"Note: Hit end of (available) data during resync." there from C. Neither can be configured
away, so :func:`quiet_stderr` puts a pipe in front of descriptor 2 (which child processes
inherit too) and a thread forwards every line except those: an informational line is
dropped, a warning or error that is not known noise is shown as one ``tagscale: warning:``
line, and everything else (Python tracebacks, our own messages, fatal errors) passes as is.

``TAGSCALE_LOG=debug`` (or ``tagscale --verbose``) leaves stderr untouched.
"""

from __future__ import annotations

import faulthandler
import os
import re
import sys
import threading

# An absl / glog line: severity, date, time, thread, file:line] message.
ABSL_LINE = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+:\d+\] ?(.*)$")
# Lines that say nothing about this run: absl's notice about itself, and libmpg123's notes and
# frame errors on damaged streams it recovers from (the decode's own checks report a track that
# cannot be used, as a dead letter).
NOISE = (
    re.compile(rb"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    re.compile(rb"^Note: "),
    re.compile(rb"^\[src/libmpg123/[^\]]*\] (note|warning|error): "),
    re.compile(rb"^Warning: .*(big value|part2_3_length|Encountered error while parsing)", re.IGNORECASE),
)
# TensorFlow looking for GPU libraries on a machine without one, and oneDNN saying it leaves an
# op to Eigen: neither changes what the run computes.
GPU_NOISE = re.compile(
    rb"Falling back to the default Eigen-based implementation|"
    rb"cuInit|cuda drivers|CUDA error|cuDNN|cuFFT|cuBLAS|TensorRT|computation placer|"
    rb"Unable to register|could not open file to read NUMA node|GPU will not be used",
    re.IGNORECASE,
)


def verbose() -> bool:
    """Whether the user asked for every log line (``TAGSCALE_LOG=debug``)."""
    return os.environ.get("TAGSCALE_LOG", "").lower() == "debug"


def filter_line(line: bytes) -> bytes | None:
    """What of one stderr line reaches the terminal: ``line``, a shorter line, or None.

    Parameters
    ----------
    line : bytes
        One line without its newline.

    Returns
    -------
    bytes or None
        None for noise and absl informational lines; ``tagscale: warning: MESSAGE`` for an
        absl warning or error that is not GPU-probing noise; ``line`` itself otherwise.
    """
    if any(pattern.search(line) for pattern in NOISE):
        return None
    match = ABSL_LINE.match(line)
    if not match:
        return line
    severity, message = match.groups()
    if severity == b"I" or GPU_NOISE.search(message):
        return None
    if severity == b"F":
        return line
    return b"tagscale: warning: " + message


class _Forwarder:
    """The pipe in front of descriptor 2 and the thread that filters it."""

    def __init__(self):
        self.terminal = os.dup(2)
        read_fd, write_fd = os.pipe()
        sys.stderr.flush()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self.read_fd = read_fd
        # A crash's traceback goes straight to the terminal: the thread may be gone by then.
        self._fault_handler_was_on = faulthandler.is_enabled()
        self._fault_file = os.fdopen(os.dup(self.terminal), "w")
        faulthandler.enable(file=self._fault_file)
        self.thread = threading.Thread(target=self._run, name="tagscale-stderr", daemon=True)
        self.thread.start()

    def _write(self, data: bytes) -> None:
        while data:
            data = data[os.write(self.terminal, data) :]

    def _run(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            kept = [kept for kept in map(filter_line, lines) if kept is not None]
            if kept:
                self._write(b"\n".join(kept) + b"\n")
        kept = filter_line(pending) if pending else None
        if kept is not None:
            self._write(kept)
        os.close(self.read_fd)

    def close(self, timeout: float = 2.0) -> None:
        """Put descriptor 2 back and forward what is left (children still holding the pipe
        keep it open: after ``timeout`` their later lines are dropped with them)."""
        sys.stderr.flush()
        os.dup2(self.terminal, 2)
        self.thread.join(timeout)
        if self._fault_handler_was_on:
            faulthandler.enable(file=sys.stderr)
        else:
            faulthandler.disable()
        self._fault_file.close()


_FORWARDER: _Forwarder | None = None


def quiet_stderr() -> None:
    """Filter this process's descriptor 2 (and its children's) through :func:`filter_line`.

    Does nothing when :func:`verbose`, or when already filtering.
    """
    global _FORWARDER
    if verbose():
        return
    if _FORWARDER is None:
        _FORWARDER = _Forwarder()


def restore_stderr() -> None:
    """Undo :func:`quiet_stderr` once its lines are forwarded."""
    global _FORWARDER
    if _FORWARDER is not None:
        _FORWARDER.close()
        _FORWARDER = None
