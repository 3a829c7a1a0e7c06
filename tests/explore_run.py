"""A small tag run for the explorer tests: real WAV files, tag Parquet in the pipeline's schema,
dead letters and a thresholds file, with scores chosen so that every tag has a different top track."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pyarrow
import pyarrow.parquet as pq

from runfolder.schema import TAGS_SCHEMA

TAGS = ["piano", "drums", "guitar", "vocal", "calm"]


def write_run(
    root: pathlib.Path,
    *,
    tracks: int = 30,
    model=("musicnn-mtt", "1"),
    seconds: float = 1.5,
    seed: int = 0,
    audio_root: str | None = None,
) -> dict:
    """Write ``root/tags/*.parquet`` (two files), ``root/dead_letter/*.parquet`` and the WAV files
    under ``root/audio``. Returns ``{"scores": {track_id: {tag: score}}, "uris": {track_id: uri}}``.

    ``audio_root`` replaces the audio directory in the URIs (e.g. a gs:// prefix the caller fills)."""
    import soundfile

    from pipelines import dead_letter

    rng = np.random.default_rng(seed)
    audio_dir = root / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    (root / "tags").mkdir(exist_ok=True)
    (root / "dead_letter").mkdir(exist_ok=True)
    rows, scores, uris = [], {}, {}
    rate = 22050
    for i in range(tracks):
        track_id = f"trk-{i:03d}"
        t = np.arange(int(seconds * rate)) / rate
        wave = 0.3 * np.sin(2 * np.pi * (220 + 20 * i) * t) + 0.01 * rng.normal(size=t.size)
        path = audio_dir / f"{track_id}.wav"
        soundfile.write(path, wave.astype(np.float32), rate, subtype="PCM_16")
        uri = f"{audio_root.rstrip('/')}/{path.name}" if audio_root else str(path)
        # Each tag peaks on a different track, so filtering by another tag changes the list.
        values = {name: float(np.float32(((i * (k + 3) + 7 * k) % tracks) / tracks)) for k, name in enumerate(TAGS)}
        scores[track_id], uris[track_id] = values, uri
        ordered = sorted(values.items(), key=lambda item: -item[1])
        rows.append(
            {
                "track_id": track_id,
                "uri": uri,
                "model": {"name": model[0], "version": model[1]},
                "duration_s": seconds,
                "n_patches": 1,
                "scores": [{"tag": name, "score": score} for name, score in ordered],
                "embedding": rng.normal(size=8).astype(np.float32).tolist(),
            }
        )
    half = len(rows) // 2
    for part, chunk in enumerate((rows[:half], rows[half:])):
        pq.write_table(
            pyarrow.Table.from_pylist(chunk, schema=TAGS_SCHEMA),
            root / "tags" / f"run-1-{part:05d}-of-00002.parquet",
        )
    failures = [
        dead_letter.record(
            track_id="bad-1", uri="/music/bad-1.mp3", stage="decode", error="file not found: /music/bad-1.mp3"
        ),
        dead_letter.record(
            track_id="bad-2", uri="/music/bad-2.mp3", stage="decode", error="file not found: /music/bad-2.mp3"
        ),
        dead_letter.record(
            track_id="bad-3", uri="/music/bad-3.mp3", stage="decode", error="ffmpeg failed: Invalid data found"
        ),
        dead_letter.record(track_id="", uri="", stage="catalog", error="row 12: track_id is empty"),
    ]
    pq.write_table(
        pyarrow.Table.from_pylist(failures, schema=dead_letter.SCHEMA),
        root / "dead_letter" / "part-00000-of-00001.parquet",
    )
    return {"scores": scores, "uris": uris}


def write_thresholds(path: pathlib.Path, thresholds: dict[str, float], model=("musicnn-mtt", "1")) -> pathlib.Path:
    """A THRESHOLDS file as `tagscale calibrate` writes it."""
    document = {
        "target_precision": 0.8,
        "model": {"name": model[0], "version": model[1]},
        "tags": {
            tag: {"threshold": value, "precision": 0.8, "recall": 0.5, "support": 10}
            for tag, value in thresholds.items()
        },
        "insufficient_labels": [],
    }
    path.write_text(json.dumps(document))
    return path


def add_segments(run_dir, seconds: float) -> dict:
    """Write ``run_dir``'s segments table (one file) and a manifest listing both tables, as
    ``tag --segments`` does; each tag's score rises with the patch index at its own pace.
    Returns each track's segment rows."""
    from model import dsp
    from runfolder import manifest, segments

    track_ids = sorted(
        row for path in manifest.tag_files(str(run_dir)) for row in pq.read_table(path)["track_id"].to_pylist()
    )
    rows = []
    for i, track_id in enumerate(track_ids):
        n = dsp.n_patches(int(seconds * dsp.SAMPLE_RATE))
        patches = [(k, [((k + 1) * (j + 1 + i)) % 10 / 10 for j in range(len(TAGS))]) for k in range(n)]
        rows += segments.segment_rows(track_id, patches, tags=TAGS, duration_s=seconds)
    name = "segments-run-1-00000-of-00001.parquet"
    pq.write_table(pyarrow.Table.from_pylist(rows, schema=segments.schema_for(TAGS)), run_dir / "tags" / name)
    files = sorted(path.name for path in (run_dir / "tags").glob("run-*.parquet"))
    manifest.write_tags_manifest(str(run_dir / "tags"), files, run_id="1", segment_names=[name])
    return {track_id: [row for row in rows if row["track_id"] == track_id] for track_id in track_ids}
