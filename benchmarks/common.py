"""Shared benchmark helpers: the 40-track MP3 catalog and CPU/wall measurement of a child process."""

from __future__ import annotations

import os
import pathlib
import re
import resource
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "work"
PYTHON = sys.executable


def cpu_flags() -> set:
    """The CPU's flags (:func:`runtime.machine.cpu_flags`), empty where they cannot be read."""
    from runtime.machine import cpu_flags as read_flags

    return read_flags() or set()


def cpu_info() -> str:
    """'model name, N cores, flags: avx512f ...', and the oneDNN kernel path where the environment
    changes it (the figures of a capped or Eigen run are not those of the CPU's own path)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        text = ""
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    vector = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "avx2", "fma") if f in cpu_flags()]
    info = f"{name}, {len(os.sched_getaffinity(0))} cores, flags: {' '.join(vector) or 'none of avx2/avx512'}"
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        info += f"; oneDNN capped at {os.environ['ONEDNN_MAX_CPU_ISA']} (ONEDNN_MAX_CPU_ISA)"
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        info += "; oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)"
    return info


def mp3_catalog(n_tracks: int = 40, seconds: float = 30.0, *, root: pathlib.Path | None = None) -> pathlib.Path:
    """40 MP3 tracks of 30 s, 44.1 kHz stereo, 128 kb/s (made once, reused), with demo-like tags."""
    from pipelines.decode.audio import ffmpeg_executable

    root = root or WORK / f"mp3_{n_tracks}x{int(seconds)}"
    catalog = root / "catalog.csv"
    if catalog.exists():
        return catalog
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rate = 44100
    t = np.arange(int(seconds * rate)) / rate
    lines = ["track_id,uri,tags"]
    for i in range(n_tracks):
        base = 110 * 2 ** (rng.integers(0, 24) / 12)
        beat = (np.sin(2 * np.pi * rng.uniform(1, 3) * t) > 0.95).astype(np.float32)
        tone = sum(np.sin(2 * np.pi * k * base * t + rng.uniform(0, 6)) / k for k in range(1, 6))
        left = 0.3 * tone * (0.6 + 0.4 * np.sin(2 * np.pi * 0.25 * t)) + 0.2 * beat * rng.normal(size=t.size)
        right = np.roll(left, 200) + 0.01 * rng.normal(size=t.size)
        pcm = (np.clip(np.stack([left, right], 1), -1, 1) * 32767).astype("<i2").tobytes()
        path = root / f"track{i:03d}.mp3"
        subprocess.run(
            [
                ffmpeg_executable(),
                "-y",
                "-loglevel",
                "error",
                "-f",
                "s16le",
                "-ar",
                str(rate),
                "-ac",
                "2",
                "-i",
                "pipe:0",
                "-c:a",
                "libmp3lame",
                "-b:a",
                "128k",
                str(path),
            ],
            input=pcm,
            check=True,
        )
        lines.append(f"track{i:03d},{path},{'drums' if i % 2 else 'calm'};{'low' if base < 220 else 'high'}")
    catalog.write_text("\n".join(lines) + "\n")
    return catalog


def measure(command: list[str], *, env: dict | None = None, cwd: pathlib.Path = REPO) -> dict:
    """Run ``command`` in ``cwd``; return wall seconds, CPU seconds (user+sys of it and its children) and stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])}... failed:\n{result.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "stdout": result.stdout, "stderr": result.stderr}


def internal_seconds(stdout: str, key: str) -> float | None:
    """Read ``key=<seconds>`` printed by a child (its own timing of the work, without imports)."""
    match = re.search(rf"{key}=([0-9.]+)", stdout)
    return float(match.group(1)) if match else None


def update_benchmarks_md(section: str, body: str) -> None:
    """Replace the section between ``<!-- section -->`` markers in BENCHMARKS.md; a new section goes
    at the end of "Latest output of each script" (before "## History"), or at the end of the file."""
    path = REPO / "BENCHMARKS.md"
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmarks\n\nMeasured numbers, written by the scripts in benchmarks/. Re-run them to refresh.\n"
    )
    start, end = f"<!-- {section} -->", f"<!-- /{section} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    elif "\n## History\n" in text:
        history = text.index("\n## History\n")
        text = text[:history].rstrip() + "\n\n" + block + "\n" + text[history:]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
