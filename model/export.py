"""The serving-model format shared by trainer exports and the pretrained musicnn models.

A serving model is a directory that the batch tagging pipeline loads without any other file:

- ``saved_model.pb`` + ``variables/``: a TF SavedModel whose ``serving_default`` signature
  takes ``waveform``: float32 (batch, PATCH_SAMPLES), 16 kHz mono patches cut by
  :func:`model.dsp.patch_waveform`, and returns ``scores``: float32 (batch, n_tags) in [0, 1]
  and ``embedding``: float32 (batch, embedding_dim). Feature extraction (log-mel, any
  normalisation) lives inside the graph.
- ``tags.txt``: the tag vocabulary, one per line, in the order of the ``scores`` columns.
- ``tagscale_model.json``: name, front-end, preset, signal constants and ``version``, a hash of
  the weights that tag outputs record so re-runs know which model made a row, and
  ``serving_graph``: which form of the network the graph computes (:data:`FAST_GRAPH` or
  :data:`KERAS_GRAPH`; same weights and outputs, so the version does not change with it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np

from model import dsp
from runtime.errors import TagscaleError

INFO_FILE = "tagscale_model.json"
TAGS_FILE = "tags.txt"
SIGNATURE = "serving_default"
# The serving graph's form: the Keras layers as written, or model.fast_frontend's CPU form.
KERAS_GRAPH = "keras"
FAST_GRAPH = "fast-frontend-2"


class ModelDirError(TagscaleError):
    """A directory that is not a complete serving model; the message names what is missing."""


def serving_signature(call_fn):
    """Wrap ``call_fn(waveform) -> {'scores', 'embedding'}`` as the serving tf.function."""
    import tensorflow as tf

    return tf.function(
        call_fn,
        input_signature=[tf.TensorSpec([None, dsp.PATCH_SAMPLES], tf.float32, name="waveform")],
    )


def save_serving_model(module, export_dir: str, *, tags: list[str], info: dict) -> dict:
    """Save ``module`` (a tf.Module with a ``serve`` tf.function made by :func:`serving_signature`).

    Returns the info dict written beside it, with ``version`` and ``n_tags`` filled in.
    """
    import tensorflow as tf

    tf.io.gfile.makedirs(export_dir)
    tf.saved_model.save(module, export_dir, signatures={SIGNATURE: module.serve})
    with tf.io.gfile.GFile(os.path.join(export_dir, TAGS_FILE), "w") as handle:
        handle.write("\n".join(tags) + "\n")
    info = dict(info)
    info.update(n_tags=len(tags), signal=dsp.constants(), version=weights_version(export_dir))
    info["serving_graph"] = getattr(module, "graph", KERAS_GRAPH)
    with tf.io.gfile.GFile(os.path.join(export_dir, INFO_FILE), "w") as handle:
        json.dump(info, handle, indent=2, sort_keys=True)
    return info


def weights_version(export_dir: str) -> str:
    """A short hash of the SavedModel's variable files: equal weights, equal version."""
    import tensorflow as tf

    digest = hashlib.sha256()
    variables = os.path.join(export_dir, "variables")
    for name in sorted(tf.io.gfile.listdir(variables)):
        with tf.io.gfile.GFile(os.path.join(variables, name), "rb") as handle:
            digest.update(name.encode())
            digest.update(handle.read())
    return digest.hexdigest()[:12]


@dataclasses.dataclass
class ServingModel:
    """A loaded serving model: call :meth:`predict` on waveform patches."""

    path: str
    tags: list[str]
    info: dict
    function: object  # the loaded serving_default concrete function

    @property
    def name(self) -> str:
        return self.info.get("name", os.path.basename(os.path.normpath(self.path)))

    @property
    def version(self) -> str:
        return self.info["version"]

    def predict(self, waveform_patches) -> dict:
        """Scores and embeddings for a batch of patches, shape (batch, PATCH_SAMPLES)."""
        import tensorflow as tf

        outputs = self.function(waveform=tf.convert_to_tensor(waveform_patches, tf.float32))
        return {key: value.numpy() for key, value in outputs.items()}


REQUIRED_FILES = ("saved_model.pb", "variables", TAGS_FILE, INFO_FILE)


def missing_files(export_dir: str) -> list[str]:
    """The files of a serving model that ``export_dir`` lacks, in :data:`REQUIRED_FILES` order.

    Local paths are checked without importing TensorFlow (``tagscale pretrained`` stays light);
    gs:// paths go through TensorFlow's filesystem, which the model is loaded with anyway.
    """
    if "://" in export_dir:
        import tensorflow as tf

        exists = tf.io.gfile.exists
    else:
        exists = os.path.exists
    return [name for name in REQUIRED_FILES if not exists(os.path.join(export_dir, name))]


def read_model_info(export_dir: str) -> tuple[list[str], dict]:
    """Read tags and info of a serving model; :class:`ModelDirError` names any missing file."""
    import tensorflow as tf

    missing = missing_files(export_dir)
    if missing:
        raise ModelDirError(f"{export_dir} is not a tagscale serving model: missing {missing[0]}")
    with tf.io.gfile.GFile(os.path.join(export_dir, TAGS_FILE)) as handle:
        tags = [line.strip() for line in handle if line.strip()]
    with tf.io.gfile.GFile(os.path.join(export_dir, INFO_FILE)) as handle:
        info = json.load(handle)
    if len(tags) != info.get("n_tags"):
        raise ModelDirError(f"{export_dir}: {TAGS_FILE} has {len(tags)} tags, {INFO_FILE} says {info.get('n_tags')}")
    return tags, info


def load_serving_model(export_dir: str) -> ServingModel:
    """Load a serving model directory written by :func:`save_serving_model`."""
    import tensorflow as tf

    tags, info = read_model_info(export_dir)
    loaded = tf.saved_model.load(export_dir)
    model = ServingModel(path=export_dir, tags=tags, info=info, function=loaded.signatures[SIGNATURE])
    model._loaded = loaded  # keep the trackable objects alive as long as the function
    return model


def check_outputs(outputs: dict, n_tags: int) -> None:
    """Check that a serving call's ``scores`` have shape (batch, n_tags); :class:`ModelDirError` if not."""
    scores = np.asarray(outputs["scores"])
    if scores.ndim != 2 or scores.shape[1] != n_tags:
        raise ModelDirError(f"model returned scores of shape {scores.shape}, expected (batch, {n_tags})")
