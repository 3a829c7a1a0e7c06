"""musicnn's TF 1 checkpoints -> the Keras ``musicnn`` preset: every variable mapped, one to one.

:func:`load_musicnn_weights` reads a checkpoint with ``tf.train.load_checkpoint`` and assigns
each Keras weight from its TF 1 variable; anything left over on either side (other than
Adam's optimizer state) is a :class:`CheckpointMappingError`, so a silent partial load cannot
happen.
"""

from __future__ import annotations

import numpy as np

# Keras layer of the `musicnn` preset -> TF 1 variable scope in the checkpoint. The TF 1 names
# follow creation order in musicnn's models.py: input BN, the timbral 7x38 and 7x67 convs, the
# temporal 128/64/32 convs, the three back-end convs, then pooled BN, dense, dense BN, output.
CHECKPOINT_SCOPES = {
    "input_bn": "batch_normalization",
    "timbral_0_conv": "conv2d",
    "timbral_0_bn": "batch_normalization_1",
    "timbral_1_conv": "conv2d_1",
    "timbral_1_bn": "batch_normalization_2",
    "temporal_0_conv": "conv2d_2",
    "temporal_0_bn": "batch_normalization_3",
    "temporal_1_conv": "conv2d_3",
    "temporal_1_bn": "batch_normalization_4",
    "temporal_2_conv": "conv2d_4",
    "temporal_2_bn": "batch_normalization_5",
    "backend_0_conv": "conv2d_5",
    "backend_0_bn": "batch_normalization_6",
    "backend_1_conv": "conv2d_6",
    "backend_1_bn": "batch_normalization_7",
    "backend_2_conv": "conv2d_7",
    "backend_2_bn": "batch_normalization_8",
    "backend_pooled_bn": "batch_normalization_9",
    "backend_dense": "dense",
    "backend_dense_bn": "batch_normalization_10",
    "backend_scores": "dense_1",
}
# Adam's state is saved beside the weights: its slots and its two step-power scalars.
OPTIMIZER_SUFFIXES = ("/Adam", "/Adam_1")
OPTIMIZER_VARIABLES = ("beta1_power", "beta2_power")


class CheckpointMappingError(RuntimeError):
    """The checkpoint and the Keras model do not correspond one to one (a bug, not user input)."""


def is_optimizer_state(name: str) -> bool:
    return name in OPTIMIZER_VARIABLES or name.endswith(OPTIMIZER_SUFFIXES)


def _without_unit_axes(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in shape if d != 1)


def load_musicnn_weights(keras_model, prefix: str) -> dict:
    """Assign every weight of a Keras ``musicnn`` model from a musicnn TF 1 checkpoint.

    Kernels whose shapes differ only by axes of size 1 (the TF 1 code's 2-D convs over a
    (time, channels, 1) image are Keras Conv1D) are reshaped.

    Returns
    -------
    dict
        ``{"assigned": n_variables, "weights": n_values, "skipped": [optimizer state names]}``.

    Raises
    ------
    CheckpointMappingError
        If any Keras weight is not assigned, any model variable of the checkpoint is unused, or
        shapes disagree.
    """
    from tensorflow.python.training import py_checkpoint_reader

    reader = py_checkpoint_reader.NewCheckpointReader(prefix)
    shapes = reader.get_variable_to_shape_map()
    wanted = {name for name in shapes if not is_optimizer_state(name)}
    used, problems, values = set(), [], 0
    for layer in keras_model.layers:
        for weight in layer.weights:
            scope = CHECKPOINT_SCOPES.get(layer.name)
            key = f"{scope}/{weight.name}"
            if scope is None or key not in shapes:
                problems.append(f"Keras weight {weight.path} has no checkpoint variable ({key})")
                continue
            value = reader.get_tensor(key)
            if _without_unit_axes(value.shape) != _without_unit_axes(weight.shape):
                problems.append(f"{key} has shape {value.shape}, Keras {weight.path} has {tuple(weight.shape)}")
                continue
            weight.assign(np.reshape(value, weight.shape))
            used.add(key)
            values += int(value.size)
    problems += [f"checkpoint variable {name} {shapes[name]} is not used" for name in sorted(wanted - used)]
    if problems:
        raise CheckpointMappingError(f"{prefix}: " + "; ".join(problems))
    return {"assigned": len(used), "weights": values, "skipped": sorted(set(shapes) - wanted)}
