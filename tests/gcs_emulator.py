"""A local GCS emulator (gcp-storage-emulator) on 127.0.0.1 for gs:// tests.

google-cloud-storage honours STORAGE_EMULATOR_HOST, and Beam's GCS filesystem builds a
google-cloud-storage client, so Beam reads and writes gs:// through the emulator too. Tests
give anonymous credentials up front: otherwise the client waits ~25 s looking for real ones.
TensorFlow's own gs:// filesystem (tf.io.gfile, tf.data) ignores the emulator: it has no endpoint override.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time

SITE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "emulator_site")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_emulator(bucket: str):
    """Start the emulator with ``bucket``; set the environment for google-cloud-storage and Beam."""
    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "gcp-storage-emulator")
    process = subprocess.Popen(
        [exe, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "--default-bucket", bucket, "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    previous = {key: os.environ.get(key) for key in ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "PYTHONPATH")}
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    os.environ["GOOGLE_CLOUD_PROJECT"] = "tagscale-test"
    # Child processes (the decode helper, Beam workers) take anonymous credentials at start-up too.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [SITE_DIR, previous["PYTHONPATH"]]))
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the GCS emulator did not start")
            time.sleep(0.2)
        anonymous_beam_gcs()
        yield client()
    finally:
        process.terminate()
        process.wait(timeout=10)
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def client():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="tagscale-test", credentials=AnonymousCredentials())


def anonymous_beam_gcs() -> None:
    """Make Beam's gcsio use anonymous credentials (no 25 s credential lookup)."""
    from apache_beam.internal.gcp import auth

    auth.set_running_in_gce(worker_executing_project=None)
    auth._Credentials._credentials_init = True
    auth._Credentials._credentials = None
