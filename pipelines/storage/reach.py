"""Whether gs:// can be reached from here, asked once per process and answered in seconds.

Without Google credentials Beam's GCS client retries its credential lookup for ~25 s, then
goes on anonymously and retries every request for minutes, filling stderr with warnings; with
no network it retries each request for 120 s. So a command that names gs:// asks first
(:func:`check`): no credentials or no route to the storage endpoint is one line, exit status 2,
before anything starts. A worker that meets a gs:// audio uri the driver did not see asks too
(:func:`problem`), once, and each such uri is then a dead letter at once.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlsplit

from runtime.errors import TagscaleError

ENDPOINT = ("storage.googleapis.com", 443)
CONNECT_TIMEOUT_S = 10.0
_lock = threading.Lock()
_answers: dict = {}  # endpoint asked (None: Google's) -> the problem found, or None


class Unreachable(TagscaleError):
    """gs:// is named but cannot be reached; the message says why."""


def _endpoint() -> tuple[str, int]:
    """Where requests go: the emulator google-cloud-storage is pointed at, else Google's."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if not emulator:
        return ENDPOINT
    parts = urlsplit(emulator if "://" in emulator else f"http://{emulator}")
    return parts.hostname or "localhost", parts.port or (443 if parts.scheme == "https" else 80)


def _credentials_problem() -> str | None:
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return None  # an emulator takes anonymous requests
    import google.auth
    import google.auth.exceptions

    try:
        google.auth.default()
    except google.auth.exceptions.DefaultCredentialsError:
        return (
            "no Google credentials (set GOOGLE_APPLICATION_CREDENTIALS to a key file or run "
            "`gcloud auth application-default login`)"
        )
    except Exception as error:  # a malformed key file, an unreadable config
        return f"Google credentials unusable: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
    return None


def _network_problem() -> str | None:
    host, port = _endpoint()
    found: list = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
            found.append(None)
        except socket.gaierror as error:
            found.append(f"no network: cannot resolve {host} ({error.strerror or error})")
        except OSError as error:
            found.append(f"no network: cannot connect to {host}:{port} ({error.strerror or error})")

    thread = threading.Thread(target=connect, daemon=True)  # a name lookup has no timeout of its own
    thread.start()
    thread.join(CONNECT_TIMEOUT_S + 2)
    return found[0] if found else f"no network: no answer from {host}:{port} in {CONNECT_TIMEOUT_S:.0f} s"


def problem() -> str | None:
    """Why gs:// cannot be reached from this process (no credentials, no network), or None;
    asked once per process and endpoint (a few seconds at most), then remembered."""
    endpoint = os.environ.get("STORAGE_EMULATOR_HOST") or None
    with _lock:
        if endpoint not in _answers:
            _answers[endpoint] = _credentials_problem() or _network_problem()
        return _answers[endpoint]


def check(*locations: str) -> None:
    """Raise :class:`Unreachable` (one line) when one of ``locations`` is on gs:// and gs:// cannot
    be reached; nothing is asked when none is."""
    named = next((location for location in locations if location.startswith("gs://")), None)
    if named is None:
        return
    reason = problem()
    if reason:
        raise Unreachable(f"gs:// cannot be reached ({named}): {reason}")
