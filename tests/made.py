"""Audio and a model made on the fly, for tests and fixtures to import by name.

(conftest.py holds the fixtures built on these; pytest does not mean conftest to be imported.)
"""

from __future__ import annotations

import pathlib

import numpy as np


def synth_tone(seconds: float, sample_rate: int, *, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A harmonic tone plus a little noise, shape (n, channels), peak about 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    base = 110.0 * 2 ** (rng.integers(0, 24, size=channels)[None, :] / 12)
    tone = sum(np.sin(2 * np.pi * k * base * t[:, None]) / k for k in range(1, 6))
    tone = tone / np.abs(tone).max() * 0.45 + rng.normal(0, 0.01, size=(len(t), channels))
    return tone.astype(np.float32)


SMALL_MODEL_TAGS = ["low", "mid", "high"]


def small_model_dir(directory) -> str:
    """A small random spectrogram model saved in the serving format under ``directory``
    (tags: SMALL_MODEL_TAGS); the same weights every time (seed 0)."""
    import keras

    from model import export, network, serving

    keras.utils.set_random_seed(0)
    model = network.build_model(
        "spectrogram",
        len(SMALL_MODEL_TAGS),
        "seed",
        timbral=((7, 0.9, 4),),
        temporal=((32, 4),),
        backend_filters=8,
        dense_units=16,
    )
    path = str(pathlib.Path(directory) / "small")
    export.save_serving_model(
        serving.build_serving_module(model, "spectrogram"), path, tags=SMALL_MODEL_TAGS, info={"name": "small"}
    )
    return path
