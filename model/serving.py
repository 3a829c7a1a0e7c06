"""Wrap a Keras tagging model as a serving module: waveform patches in, scores and embedding out.

The module's ``serve`` function (see :func:`model.export.serving_signature`) takes
(batch, ``dsp.PATCH_SAMPLES``) float32 waveform patches. For the spectrogram front-end it
computes :func:`model.dsp.log_mel_patches` inside the graph, then runs the Keras model.
A trained spectrogram model also needs the training split's per-band normalisation:
:mod:`trainer.exporting` subclasses :class:`ServingModule` to apply the tf.Transform layer
between the two. Save a module with :func:`model.export.save_serving_model`.

A spectrogram model with musicnn's max-after temporal branch is served through
:class:`model.fast_frontend.FastSpectrogramModel`: the same weights and outputs (to float32
rounding), about three times as fast on CPU. ``graph`` says which form a module serves.
"""

from __future__ import annotations

import tensorflow as tf

from model import dsp, export, fast_frontend, network


class ServingModule(tf.Module):
    """A tf.Module holding the Keras model with a ``serve`` tf.function.

    Parameters
    ----------
    keras_model : keras.Model
        Built by :func:`model.network.build_model`; outputs a dict with ``scores`` and
        ``embedding``.
    frontend : {"waveform", "spectrogram"}
        Which input the Keras model takes.
    """

    def __init__(self, keras_model, frontend: str):
        super().__init__(name="tagscale_serving")
        network.check_frontend(frontend)
        self.model = keras_model
        self.frontend = frontend
        fast = frontend == "spectrogram" and fast_frontend.supports(keras_model)
        # A plain attribute of a plain object: tf.Module tracks the Keras model's variables once.
        self._forward = fast_frontend.FastSpectrogramModel(keras_model) if fast else None
        self.graph = export.FAST_GRAPH if fast else export.KERAS_GRAPH
        self.serve = export.serving_signature(self._serve)

    def _serve(self, waveform):
        x = waveform  # (batch, samples)
        if self.frontend == "spectrogram":
            x = dsp.log_mel_patches(waveform)  # (batch, time, mel)
        if self._forward is not None:
            outputs = self._forward(x)
        else:
            outputs = self.model(x, training=False)
        return {"scores": outputs["scores"], "embedding": outputs["embedding"]}


def build_serving_module(keras_model, frontend: str) -> ServingModule:
    """Return a :class:`ServingModule` for ``keras_model`` (see its docstring)."""
    return ServingModule(keras_model, frontend)
