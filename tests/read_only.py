"""Run a ``tagscale`` command with one folder read-only, as a user with a read-only mount sees it.

As root, permission bits do not stop a write, so the folder is bind-mounted read-only in a
private mount namespace (``unshare -m``) that only the command sees; as another user, the
folder's write bits are cleared for the command's duration.
"""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_read_only(folder, argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m infra.cli ARGV`` with ``folder`` read-only; skips where that cannot be arranged."""
    folder = str(folder)
    command = [sys.executable, "-m", "infra.cli", *argv]
    if os.geteuid() != 0:
        mode = os.stat(folder).st_mode
        os.chmod(folder, 0o555)
        try:
            return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        finally:
            os.chmod(folder, mode)
    if not shutil.which("unshare"):
        pytest.skip("running as root without unshare: no way to make a folder read-only")
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && ! touch "$0/.w" 2>/dev/null', folder],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot bind-mount {folder} read-only here: {probe.stderr.decode(errors='replace').strip()}")
    script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, folder, *command],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
