"""featurize's memory does not grow with the catalog: peak RSS of the featurize process on a
catalog 4x larger, whose single shard per split holds several times the allowed growth."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECONDS = 6.1  # two patches per track
ALLOWED_GROWTH_MB = 30  # measured growth is a few MB; the large run's train shard holds ~100 MB


def make_catalog(root, n_tracks):
    import soundfile

    rng = np.random.default_rng(n_tracks)
    t = np.arange(int(SECONDS * 16000)) / 16000
    lines = ["track_id,uri,tags"]
    for i in range(n_tracks):
        path = root / f"m{i:04d}.wav"
        if not path.exists():
            tone = 0.3 * np.sin(2 * np.pi * (110 + 7 * i) * t) + 0.05 * rng.normal(size=t.size)
            soundfile.write(path, tone.astype(np.float32), 16000, subtype="PCM_16")
        lines.append(f"m{i:04d},{path},{'a' if i % 2 else 'b'};{'c' if i % 3 else 'd'}")
    catalog = root / f"catalog_{n_tracks}.csv"
    catalog.write_text("\n".join(lines) + "\n")
    return catalog


@pytest.mark.slow
def test_peak_rss_is_flat_from_100_to_400_tracks(tmp_path):
    runs = {}
    for n_tracks in (100, 400):
        catalog = make_catalog(tmp_path, n_tracks)
        output = tmp_path / f"out_{n_tracks}"
        command = [
            sys.executable,
            "-m",
            "pipelines.featurize",
            "--catalog",
            str(catalog),
            "--output",
            str(output),
            "--num-shards",
            "1",
        ]
        process = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": REPO}
        )
        stderr = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
        assert status == 0, stderr[-3000:].decode(errors="replace")
        metadata = json.loads((output / "metadata.json").read_text())
        assert metadata["tracks_ok"] == n_tracks
        # the train split's one shard, mel and waveform files together: what one writer streams
        shard_bytes = sum(os.path.getsize(output / metadata["files"][kind]["train"][0]) for kind in ("mel", "waveform"))
        runs[n_tracks] = (usage.ru_maxrss / 1024, shard_bytes / 2**20)  # ru_maxrss is in KB on Linux
    print(runs)
    (small_rss, _), (large_rss, large_shard_mb) = runs[100], runs[400]
    assert large_shard_mb > 3 * ALLOWED_GROWTH_MB  # one shard alone is several times the allowed growth
    assert large_rss - small_rss < ALLOWED_GROWTH_MB, runs
    assert large_rss < 1.15 * small_rss, runs
