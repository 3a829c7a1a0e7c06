"""The musicnn spectrogram front-end rewritten for CPU inference: same weights, same outputs.

:func:`model.network.spectrogram_frontend` with ``temporal_pooling="max_after"`` (the
``musicnn`` preset) spends most of its time outside the multiply-adds: every conv output
(up to 187 x 96 x 51 values per filter bank and patch) goes through ReLU and batch norm before
the max over frequency keeps one value in 30 to 96. This module computes the same function in an
order that touches far less memory:

1. **Max first.** ReLU and an inference batch norm are, per channel, non-decreasing (scale > 0)
   or non-increasing (scale < 0) functions, and rounding keeps that order, so
   ``max_f BN(ReLU(z_f + b)) == BN(ReLU(max_f z_f + b))`` exactly when scale > 0, and the same
   with ``-max_f(-z_f)`` when scale < 0. The kernels of channels with a negative scale are
   negated (exact), the max over frequency taken on the raw conv output, and the sign restored.
   The elementwise work then runs on (time, channels) instead of (time, frequency, channels).
2. **Temporal convs as one GEMM.** A conv over time with one input channel is a linear map of
   each band's 187 frames; the three temporal kernels ("same" padding) become one banded
   (187, 187 x 153) matrix, applied to every band as a single matrix product. That is 2.5x the
   multiply-adds of the convs, but it runs at ~40 GFLOPS where TF's 1-channel Conv2D with a
   128-frame kernel runs at 4 (BENCHMARKS.md, profile), so the branch takes a quarter of the time.

The back-end is the Keras model's own layers, called as a sub-model. Outputs equal the Keras
model's to float32 rounding (tests/test_network.py measures it).
"""

from __future__ import annotations

import numpy as np


def supports(keras_model) -> bool:
    """True for a spectrogram model with musicnn's max-after-convolution temporal branch."""
    names = {layer.name for layer in keras_model.layers}
    return "mel_channel" in names and "temporal_0_conv" in names and _max_after(keras_model)


def _max_after(keras_model) -> bool:
    # With "mean_first" the temporal convs see one band: their kernels are (L, 1, 1, F) as well,
    # but the graph holds a mean over the mel axis; "max_after" models have no such op.
    temporal = keras_model.get_layer("temporal_0_conv")
    return temporal.input.shape[2] == keras_model.get_layer("mel_channel").output.shape[2]


def _count(names: set, prefix: str) -> int:
    """How many ``{prefix}{i}_conv`` layers there are."""
    return sum(name.startswith(prefix) and name.endswith("_conv") for name in names)


def _bn(layer) -> dict:
    """The batch norm's variables by role (read in the graph, so they stay the saved weights)."""
    return {
        "scale": layer.gamma,
        "offset": layer.beta,
        "mean": layer.moving_mean,
        "variance": layer.moving_variance,
        "epsilon": layer.epsilon,
    }


def _apply_bn(x, bn):
    import tensorflow as tf

    return tf.nn.batch_normalization(x, bn["mean"], bn["variance"], bn["offset"], bn["scale"], bn["epsilon"])


def _sign(scales):
    """+1 where a batch norm's slope gamma / sqrt(var + eps) is >= 0, else -1 (one per channel)."""
    import tensorflow as tf

    return tf.where(tf.concat(scales, axis=0) >= 0, 1.0, -1.0)


def toeplitz_taps(length: int, n_frames: int) -> np.ndarray:
    """(input frame, output frame) -> kernel tap of a "same"-padded conv, or ``length`` (a zero row).

    TF's "same" padding puts the extra frame of an even kernel after: ``(length - 1) // 2`` before.
    """
    source = np.arange(n_frames)[:, None]
    target = np.arange(n_frames)[None, :]
    tap = source - target + (length - 1) // 2
    return np.where((tap >= 0) & (tap < length), tap, length).astype(np.int32)


def temporal_matrix(kernels, n_frames: int):
    """The banded matrix T with ``frames @ T`` = every temporal conv at once.

    Parameters
    ----------
    kernels : list of tensors (length, filters)
        One per temporal conv, in output-channel order.
    n_frames : int

    Returns
    -------
    tf.Tensor (n_frames, n_frames * total_filters)
        Column ``t * total_filters + c`` holds output frame t of channel c.
    """
    import tensorflow as tf

    blocks = []
    for kernel in kernels:
        padded = tf.concat([kernel, tf.zeros([1, kernel.shape[1]], kernel.dtype)], axis=0)  # zero row for no tap
        blocks.append(tf.gather(padded, toeplitz_taps(int(kernel.shape[0]), n_frames)))  # (in, out, filters)
    return tf.reshape(tf.concat(blocks, axis=-1), [n_frames, -1])


class FastSpectrogramModel:
    """Callable ``log_mel (batch, frames, mels) -> {"scores", "embedding"}`` with the Keras
    model's outputs, computed as described in the module docstring from the model's own variables.

    Parameters
    ----------
    keras_model : keras.Model
        A spectrogram model for which :func:`supports` is true.
    """

    def __init__(self, keras_model):
        import keras

        if not supports(keras_model):
            raise ValueError(f"{keras_model.name} is not a spectrogram model with max-after temporal pooling")
        get = keras_model.get_layer
        names = {layer.name for layer in keras_model.layers}
        self.n_frames = int(get("mel_channel").output.shape[1])
        self.input_bn = _bn(get("input_bn")) if "input_bn" in names else None
        self.timbral = [
            (
                get(f"timbral_{i}_conv"),
                _bn(get(f"timbral_{i}_bn")),
                get(f"timbral_{i}_pad").padding[0] if f"timbral_{i}_pad" in names else (0, 0),
            )
            for i in range(_count(names, "timbral_"))
        ]
        self.temporal = [
            (get(f"temporal_{i}_conv"), _bn(get(f"temporal_{i}_bn"))) for i in range(_count(names, "temporal_"))
        ]
        # The back-end's own layers, as a sub-model from the front-end's output.
        self.backend = keras.Model(
            get("spectrogram_features").output,
            {"scores": get("backend_scores").output, "embedding": get("backend_dense_bn").output},
        )

    def _timbral(self, image, conv, bn, pad):
        import tensorflow as tf

        sign = _sign([bn["scale"]])
        padded = tf.pad(image, [[0, 0], list(pad), [0, 0], [0, 0]])
        z = tf.nn.conv2d(padded, conv.kernel * sign, strides=1, padding="VALID")  # (batch, time, freq, filters)
        maxed = tf.reduce_max(z, axis=2) * sign  # (batch, time, filters): max, or min where sign < 0
        return _apply_bn(tf.nn.relu(maxed + conv.bias), bn)

    def _temporal(self, x):
        import tensorflow as tf

        sign = _sign([bn["scale"] for _, bn in self.temporal])
        kernels = [conv.kernel[:, 0, 0, :] for conv, _ in self.temporal]  # (length, 1, 1, filters) -> (length, filters)
        matrix = tf.transpose(temporal_matrix(kernels, self.n_frames) * tf.tile(sign, [self.n_frames]))
        channels = int(sign.shape[0])
        n_mels = int(x.shape[2])
        # (time, mel * batch) in, (time * channels, mel * batch) out: the max over mel is then a
        # reduction over a short inner axis, and no (batch, time, mel, channels) copy is transposed.
        bands = tf.reshape(tf.transpose(x, [1, 2, 0]), [self.n_frames, -1])
        z = tf.reshape(tf.linalg.matmul(matrix, bands), [self.n_frames, channels, n_mels, -1])
        maxed = tf.transpose(tf.reduce_max(z, axis=2), [2, 0, 1]) * sign  # (batch, time, channels)
        bias = tf.concat([conv.bias for conv, _ in self.temporal], axis=0)
        bn = {
            key: tf.concat([b[key] for _, b in self.temporal], axis=0)
            for key in ("scale", "offset", "mean", "variance")
        }
        epsilons = {b["epsilon"] for _, b in self.temporal}
        if len(epsilons) != 1:
            raise ValueError(f"temporal batch norms with different epsilons {sorted(epsilons)}")
        return _apply_bn(tf.nn.relu(maxed + bias), dict(bn, epsilon=epsilons.pop()))

    def frontend(self, log_mel):
        """(batch, frames, mels) -> (batch, frames, timbral + temporal channels)."""
        import tensorflow as tf

        x = tf.convert_to_tensor(log_mel, tf.float32)
        if self.input_bn is not None:
            x = _apply_bn(x, self.input_bn)
        branches = [self._timbral(x[..., None], conv, bn, pad) for conv, bn, pad in self.timbral]
        return tf.concat(branches + [self._temporal(x)], axis=-1)

    def __call__(self, log_mel):
        outputs = self.backend(self.frontend(log_mel), training=False)
        return {"scores": outputs["scores"], "embedding": outputs["embedding"]}
