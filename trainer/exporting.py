"""Export a trained model as a serving model (:mod:`model.export` format): waveform patches in.

Waveform front-end: :class:`model.serving.ServingModule` as is (the model takes raw patches).

Spectrogram front-end: the features the model was trained on are the tf.Transform output
``log_mel``: :func:`model.dsp.log_mel_patches` (computed by featurize before tf.Transform, so
the export applies it here too) then the per-band normalisation with the training split's
statistics. The export carries that exact graph: the tf.Transform layer
(``TFTransformOutput.transform_features_layer()``, a tf_keras model, so it cannot sit inside
the Keras 3 model, so it cannot be a layer of it) is held by a tf.Module beside the Keras model and applied
to ``{"log_mel": dsp.log_mel_patches(patches)}`` in the serving function. The layer prunes the transform graph to
the outputs computable from the inputs it is given (``drop_unused_features``), so it needs no
track_id, patch_index or tags at serving time. ``tf.saved_model.save`` copies the transform's
variables and assets into the export, so the export runs without the features directory.
A model trained with ``--no-standardise`` saw the raw log-mel: its export feeds it that, with
no transform.
"""

from __future__ import annotations

import tensorflow as tf

from model import dsp, export, serving


class TransformServingModule(serving.ServingModule):
    """Serving module for the spectrogram model: waveform -> tf.Transform ``log_mel`` -> model."""

    def __init__(self, keras_model, transform_layer):
        super().__init__(keras_model, "spectrogram")
        self.transform_layer = transform_layer  # tracked: saved with the module

    def _serve(self, waveform):
        raw_log_mel = dsp.log_mel_patches(waveform)  # what featurize fed tf.Transform
        log_mel = self.transform_layer({"log_mel": raw_log_mel})["log_mel"]  # (batch, time, mel), normalised
        outputs = self.model(log_mel, training=False)
        return {"scores": outputs["scores"], "embedding": outputs["embedding"]}


def serving_module(keras_model, frontend: str, features_dir: str | None = None, *, standardised: bool = True):
    """The tf.Module to export for ``frontend``; the spectrogram one needs ``features_dir`` unless the
    model was trained on the raw log-mel (not ``standardised``)."""
    if frontend == "waveform" or not standardised:
        return serving.build_serving_module(keras_model, frontend)
    import tensorflow_transform as tft

    transform_layer = tft.TFTransformOutput(features_dir).transform_features_layer()
    return TransformServingModule(keras_model, transform_layer)


def export_model(
    keras_model,
    frontend: str,
    export_dir: str,
    *,
    features_dir: str,
    tags: list[str],
    info: dict,
    standardised: bool = True,
) -> dict:
    """Write the serving model directory; returns the info written (with ``version``)."""
    if tf.io.gfile.exists(export_dir):
        tf.io.gfile.rmtree(export_dir)  # a re-run replaces the export instead of mixing files
    module = serving_module(keras_model, frontend, features_dir, standardised=standardised)
    normalisation = "tf.Transform transform_features_layer (per-band mean/std of the training split)"
    if not standardised:
        normalisation = "none (raw log-mel, --no-standardise)"
    info = {
        **info,
        "frontend": frontend,
        "input_normalisation": normalisation if frontend == "spectrogram" else "none (raw waveform)",
    }
    return export.save_serving_model(module, export_dir, tags=tags, info=info)
