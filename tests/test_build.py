"""trainer.build: a model kept between runs starts the next run exactly as a new one would."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from featurized import train_args

from trainer import build, fitting, task


@pytest.mark.slow
def test_a_kept_model_starts_the_next_run_as_a_new_model_would(demo_features, tmp_path, monkeypatch):
    features = demo_features
    traces = []  # Python runs the train step only while TensorFlow traces it
    train_step = keras.Model.train_step
    monkeypatch.setattr(keras.Model, "train_step", lambda model, data: traces.append(1) or train_step(model, data))
    # Per run: the state at the start and at the end of fit (the network has dropout: its seed
    # state must be reset too), the train function and the traces so far.
    seen = []

    def state(model):
        return [np.array(v.numpy()) for v in (*model.variables, *model.optimizer.variables)]

    class Capture(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append({"begin": state(self.model), "function": self.model.train_function})

        def on_train_end(self, logs=None):
            seen[-1]["end"] = state(self.model)
            seen[-1]["traces"] = len(traces)

    fit_callbacks = fitting.fit_callbacks  # observed by wrapping the one list of a fit's callbacks
    monkeypatch.setattr(fitting, "fit_callbacks", lambda *args: [Capture(), *fit_callbacks(*args)])

    def run(name, fraction, keep):
        args = train_args(features, tmp_path / name, "spectrogram", "--epochs", "1", "--fraction", fraction)
        return task.train_and_evaluate(args, keep=keep).model

    build._kept.clear()
    first = run("first", "0.5", keep=True)
    second = run("second", "0.25", keep=True)  # the same network and recipe: the kept model
    build._kept.clear()
    fresh = run("fresh", "0.25", keep=False)

    assert second is first and fresh is not first
    assert seen[0]["traces"] >= 1 and seen[2]["traces"] > seen[1]["traces"]  # a new model: traced
    assert seen[1]["function"] is seen[0]["function"] and seen[1]["traces"] == seen[0]["traces"]  # not traced again
    assert any(not np.array_equal(a, b) for a, b in zip(seen[0]["begin"], seen[0]["end"]))  # the first run trained
    for reused, new in zip(seen[1]["begin"], seen[2]["begin"], strict=True):
        np.testing.assert_array_equal(reused, new)
    for reused, new in zip(seen[1]["begin"], seen[0]["begin"], strict=True):
        np.testing.assert_array_equal(reused, new)
    assert len(seen[1]["begin"]) > len(first.trainable_variables) * 3  # weights, statistics, seeds, slots, step
