"""Errors a user can fix, and the one way every command reports them: one line, exit 2."""

from __future__ import annotations

import gc
import os
import sys
from typing import Callable, Sequence

from runtime import logs


class TagscaleError(Exception):
    """Base class for user-facing errors (bad catalog, missing model, bad flags)."""


def run_command(
    name: str, main: Callable[[list[str]], int], argv: Sequence[str] | None = None, *, quiet: bool | None = None
) -> int:
    """Run a subcommand's ``main(argv)`` the way ``tagscale NAME`` does.

    A :class:`TagscaleError` prints ``tagscale NAME: error: MESSAGE`` on stderr and returns 2;
    Ctrl-C returns 130. ``python -m pipelines.featurize`` and friends call this too, so every
    entry point reports errors alike. ``quiet`` (default: when ``argv`` is None, i.e. the
    command owns the whole process) keeps the libraries' C++ log lines off the terminal
    (:func:`runtime.logs.quiet_stderr`); a library caller's stderr is left alone.
    """
    if not logs.verbose():  # TensorFlow's own log level; --verbose leaves it to TensorFlow
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if quiet if quiet is not None else argv is None:
        logs.quiet_stderr()
    try:
        code = main(list(sys.argv[1:] if argv is None else argv))
    except TagscaleError as error:
        print(f"tagscale {name}: error: {error}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"tagscale {name}: interrupted", file=sys.stderr)
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    logs.restore_stderr()
    # Protobuf objects that tf.Transform leaves behind can crash the interpreter while it tears
    # down its heap (a segfault after all work finished). Collecting once and then freezing the
    # heap keeps the teardown from touching them, so the process exits with its real code.
    gc.collect()
    gc.freeze()
    return code or 0
