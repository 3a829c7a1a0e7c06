"""Featurized demo catalogs shared by the trainer's test files, and the tiny network they train.

Each folder is made once per session under pytest's base temp directory, so every test file that
asks for it reuses the first one's. Making one runs the featurize Beam pipeline: tests that use
them are marked ``slow``.
"""

from __future__ import annotations

import pathlib

# A small demo catalog on which both front-ends learn within a few CPU minutes (see test_compare).
DEMO_TRACKS, DEMO_SECONDS = 400, 3.5  # one patch per track: many distinct tracks beat many patches
# The smallest network the trainer builds; tests add their own --batch-size.
TINY_NETWORK = ["--frontend-filters", "2", "--backend-channels", "8", "--dense-units", "16"]
TINY = [*TINY_NETWORK, "--batch-size", "8"]


def make_demo_features(tmp_path_factory) -> pathlib.Path:
    """The 400-track demo catalog featurized (top 16 tags, 15% valid, 20% test), once per session."""
    root = tmp_path_factory.getbasetemp() / "trainer_demo"
    features = root / "features"
    if (features / "metadata.json").exists():
        return features
    from infra.demo import catalog as demo_catalog
    from pipelines import featurize

    catalog = demo_catalog.make_demo_catalog(
        str(root / "catalog"), n_tracks=DEMO_TRACKS, seed=0, duration_s=DEMO_SECONDS
    )
    featurize.run(
        [
            "--catalog",
            catalog,
            "--output",
            str(features),
            "--top-k",
            "16",
            "--valid-fraction",
            "0.15",
            "--test-fraction",
            "0.2",
        ]
    )
    return features


def make_small_features(tmp_path_factory) -> pathlib.Path:
    """48 demo tracks featurized (one patch each), once per session: enough for every split, small
    enough for two training workers on a shared CPU."""
    root = tmp_path_factory.getbasetemp() / "small_demo"
    if (root / "features" / "metadata.json").exists():
        return root / "features"
    from infra.demo import catalog as demo_catalog
    from pipelines import featurize

    catalog = demo_catalog.make_demo_catalog(str(root / "catalog"), n_tracks=48, seed=0, duration_s=3.5)
    featurize.run(
        ["--catalog", catalog, "--output", str(root / "features"), "--top-k", "8"]
        + ["--valid-fraction", "0.2", "--test-fraction", "0.2"]
    )
    return root / "features"


def train_args(features, job_dir, frontend: str, *extra: str):
    """The trainer's parsed flags for the tiny network (batch 16, silent) on ``features``."""
    from trainer import task

    flags = ["--features", str(features), "--frontend", frontend, "--job-dir", str(job_dir)]
    return task.parse_args([*flags, *TINY_NETWORK, "--batch-size", "16", "--verbose", "0", *extra])
