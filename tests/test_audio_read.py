"""pipelines.decode.read, what the decoders and the decode helper process share: one definition of
each error and check (re-exported by pipelines.decode.audio), and a helper that never loads the module
that starts it."""

import os
import subprocess
import sys

from pipelines.decode import audio
from pipelines.decode import helper as decode_worker
from pipelines.decode import read as audio_read

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_audio_and_the_helper_raise_the_same_errors():
    for name in ("DecodeError", "DecodeLimit", "TransientError", "decode_with_soundfile", "check_samples"):
        assert getattr(audio, name) is getattr(audio_read, name)
    assert decode_worker.audio_read is audio_read


# The helper's own loop, fed one request for a missing file: what it loads to answer it.
SERVE_ONE = """
import io, json, struct, sys
from pipelines.decode import helper as decode_worker
request = json.dumps({"uri": "/nonexistent/a.wav", "max_duration_s": 1.0}).encode()
sys.stdin = io.TextIOWrapper(io.BytesIO(struct.pack("<I", len(request)) + request))
sys.stdout = io.TextIOWrapper(io.BytesIO())
decode_worker.serve()
written = sys.stdout.buffer.getvalue()[len(decode_worker.READY) :]
status, size = struct.unpack("<BQ", written[:9])
print(status, written[9 : 9 + size].decode(), file=sys.stderr)
print(" ".join(sorted(m for m in sys.modules if m.startswith(("pipelines", "apache_beam")))), file=sys.stderr)
"""


def test_the_helper_process_loads_neither_the_decoders_nor_beam():
    out = subprocess.run(
        [sys.executable, "-c", SERVE_ONE],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    answer, modules = out.stderr.strip().splitlines()[-2:]
    assert answer == f"{decode_worker.FAILED} file not found: /nonexistent/a.wav"
    assert sorted(modules.split()) == [
        "pipelines",
        "pipelines.decode",
        "pipelines.decode.helper",
        "pipelines.decode.read",
    ]
