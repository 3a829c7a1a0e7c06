"""Faster forms of four Keras layers of :mod:`model.network` for CPU training, with the layers' own variables.

TensorFlow's CPU convolutions are slow when a conv has one input channel and few filters: they
cannot fill a dense GEMM, and the demo's small networks are made of such convs. Keras' batch
norm computes its training statistics and gradient in several passes over the tensor, and
TF's MaxPool gradient kernel is slow, which the sample-level front-end's (batch, 16,042,
filters) maps make expensive. Each layer here
subclasses the Keras layer it replaces and only changes how the same function is computed, so
the variables (names, shapes) stay those of the plain layer: musicnn's pretrained weights,
checkpoints and saved models load unchanged, and cases the fast form does not cover fall back
to the plain computation.
"""

from __future__ import annotations

import keras
from keras import layers, ops

# Up to this many filters a timbral conv runs as one banded Conv1D (TimbralConv); measured at
# batch 16 on one CPU thread, forward + backward: 7 x 38 with 4 filters 0.40 -> 0.04 CPU s,
# 32 filters 0.47 -> 0.34; at 64 filters and more TF's own Conv2D is as fast or faster.
BANDED_MAX_FILTERS = 32


def band_mask(bands: int, n_mels: int):
    """0/1 array (bands, n_mels, n_mels - bands + 1): 1 where mel ``c`` is band ``d`` of output ``f``."""
    import numpy as np

    n_freq = n_mels - bands + 1
    mask = np.zeros((bands, n_mels, n_freq), "float32")
    for d in range(bands):
        mask[d, np.arange(n_freq) + d, np.arange(n_freq)] = 1.0
    return mask


@keras.saving.register_keras_serializable(package="tagscale")
class TimbralConv(layers.Conv2D):
    """A Conv2D over one-channel (time, mel) input, computed as a Conv1D over time when filters are few.

    The variables are Conv2D's own (kernel (width, bands, 1, filters), bias), so pretrained and
    saved weights load unchanged. TF's CPU Conv2D is slow for one input channel and few
    filters (it cannot fill its GEMM); instead the kernel is spread over the whole mel axis,
    ``banded[t, c, f * filters + k] = kernel[t, c - f, 0, k]`` (zero outside the band), and one
    Conv1D with the mels as input channels gives every frequency position at once: more
    multiply-adds (``n_mels / bands`` times) but one dense GEMM, and the banded kernel is a
    differentiable function of the kernel, so training updates the same variable.
    """

    def convolution_op(self, inputs, kernel):
        width, bands, channels, filters = kernel.shape
        plain = (self.strides, self.dilation_rate, self.padding, self.data_format) != (
            (1, 1),
            (1, 1),
            "valid",
            "channels_last",
        )
        if plain or channels != 1 or filters > BANDED_MAX_FILTERS:
            return super().convolution_op(inputs, kernel)
        n_mels = inputs.shape[2]
        n_freq = n_mels - bands + 1
        mask = ops.cast(band_mask(bands, n_mels), kernel.dtype)
        banded = ops.einsum("tdk,dcf->tcfk", kernel[:, :, 0, :], mask)  # (width, n_mels, n_freq, filters)
        banded = ops.reshape(banded, (width, n_mels, n_freq * filters))
        out = ops.conv(inputs[..., 0], banded, padding="valid")  # (batch, time, n_freq * filters)
        return ops.reshape(out, (-1, out.shape[1], n_freq, filters))


@keras.saving.register_keras_serializable(package="tagscale")
class FrameConv(layers.Conv1D):
    """A Conv1D over one-channel input whose stride equals its kernel, computed as one matmul.

    Such a conv multiplies non-overlapping frames of ``kernel_size`` samples by the kernel:
    reshaping the samples to (batch * frames, kernel_size) gives the same sums in one 2-D GEMM
    with a bias add TensorFlow fuses into it. Keras' ``Conv1D.call`` calls ``ops.conv``
    directly (not ``convolution_op``), so the whole ``call`` is replaced. Same variables as
    Conv1D; anything but a framed one-channel conv is Conv1D's own code.
    """

    def call(self, inputs):
        size, channels, filters = self.kernel.shape
        framed = (self.strides, self.dilation_rate, self.padding, self.data_format) == (
            (size,),
            (1,),
            "valid",
            "channels_last",
        )
        if not framed or channels != 1:
            return super().call(inputs)
        n_frames = inputs.shape[1] // size
        frames = ops.reshape(inputs[:, : n_frames * size, 0], (-1, size))  # (batch * frames, size)
        out = ops.matmul(frames, self.kernel[:, 0, :])  # (batch * frames, filters)
        if self.use_bias:
            out = _bias_add(out, self.bias)
        if self.activation is not None:
            out = self.activation(out)
        return ops.reshape(out, (-1, n_frames, filters))


def _bias_add(x, bias):
    """``x + bias`` over the last axis; TF's BiasAdd (one-pass gradient) on TensorFlow."""
    if keras.backend.backend() != "tensorflow":
        return ops.add(x, bias)
    import tensorflow as tf

    return tf.nn.bias_add(x, bias)


@keras.saving.register_keras_serializable(package="tagscale")
class BlockMaxPool(layers.MaxPooling1D):
    """MaxPooling1D whose windows do not overlap (stride = pool size), as a reshape and a max.

    (batch, time, channels) -> (batch, time // size, size, channels) and the max over the
    window axis: the same values as TF's MaxPool, with a gradient of elementwise ops instead of
    the MaxPoolGrad kernel, which was the slowest op of the waveform step after the convs
    (forward + backward over (16, 16,038, 16): 0.025 instead of 0.047 CPU s). The one
    difference is where a window holds tied maxima: MaxPool's gradient goes to the first,
    this one's is shared equally. In :func:`model.network.waveform_frontend` the pool follows
    ReLU and batch norm, where ties are the ReLU's zeros, whose gradient the ReLU discards
    either way, so the network's gradient is the same.
    """

    def call(self, inputs):
        (size,), (stride,) = self.pool_size, self.strides
        if size != stride or self.padding != "valid" or self.data_format != "channels_last":
            return super().call(inputs)
        n_windows, channels = inputs.shape[1] // size, inputs.shape[2]
        if n_windows * size != inputs.shape[1]:
            # split, not slice: the gradient of a slice (StridedSliceGrad) cost more than the pool
            inputs = ops.split(inputs, [n_windows * size], axis=1)[0]
        windows = ops.reshape(inputs, (-1, n_windows, size, channels))
        return ops.max(windows, axis=2)


@keras.saving.register_keras_serializable(package="tagscale")
class FusedBatchNorm(layers.BatchNormalization):
    """BatchNormalization whose training step is TensorFlow's fused batch-norm kernel.

    The fused kernel normalises and returns the batch statistics in one pass and has a
    one-kernel gradient: forward + backward over (16, 16,042, 16) took 0.051 instead of 0.083
    CPU s. On maps of at least ``BN_XLA_MIN_POSITIONS`` positions per example the forward and
    the gradient are XLA-compiled functions instead (:func:`_batch_norm_xla`), faster again
    there. Inference, and anything but a plain last-axis norm on TensorFlow, is Keras' own code.
    """

    def call(self, inputs, training=None, mask=None):
        plain = (
            not (training and self.trainable)
            or mask is not None
            or self.renorm
            or self.synchronized
            or not (self.scale and self.center)
            or keras.backend.backend() != "tensorflow"
            or len(inputs.shape) < 3
            or self.axis not in (-1, len(inputs.shape) - 1)
        )
        if plain:
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, "float32")  # statistics in float32, as Keras does
        shape = tf.shape(x)
        channels = x.shape[-1]
        gamma, beta = tf.cast(self.gamma, "float32"), tf.cast(self.beta, "float32")
        positions = 1
        for size in x.shape[1:-1]:
            positions *= size if size is not None else 0
        if positions >= BN_XLA_MIN_POSITIONS:
            y, mean, variance = _batch_norm_xla(tf.reshape(x, [-1, channels]), gamma, beta, self.epsilon)
        else:
            y, mean, variance = _batch_norm_fused(tf.reshape(x, [-1, channels]), gamma, beta, self.epsilon)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(tf.reshape(y, shape), self.compute_dtype)


# Per-example positions (time x frequency) from which a training batch norm is computed by XLA
# rather than TF's fused kernels: about 1.7x faster on the waveform's first two maps (16,042
# steps), but compiled once per batch shape (~0.1-0.5 CPU s each). This takes those two
# and the spectrogram's 38-band timbral maps (187 x 59); taking the waveform's third map too
# (5,344 steps) made no difference measurable on a shared machine, so it keeps the fused kernel.
BN_XLA_MIN_POSITIONS = 8192


def _batch_norm_fused(x, gamma, beta, epsilon):
    """Training batch norm of (rows, channels) by TF's fused kernel: (y, mean, biased variance)."""
    import tensorflow as tf

    shape = tf.shape(x)
    y, mean, variance, *_ = tf.compat.v1.nn.fused_batch_norm(
        tf.reshape(x, [shape[0], 1, 1, shape[1]]), gamma, beta, epsilon=epsilon, is_training=True
    )
    # The kernel returns the unbiased variance (for its own running average); Keras
    # averages the biased one.
    n = tf.cast(shape[0], "float32")
    return tf.reshape(y, shape), mean, variance * (n - 1.0) / n


def _batch_norm_xla(x, gamma, beta, epsilon):
    """Training batch norm of (rows, channels), forward and gradient each one XLA-compiled function.

    TF's fused kernels were the largest ops of the waveform step: over (16 x 16,042, 16) the
    forward took 0.017 CPU s, XLA's fused two passes 0.009 (and its two-pass variance is
    Keras' own formula: 1.7e-6 from float64, the fused kernel's 4e-4); the gradient, ``dx =
    gamma / sigma * (dy - mean(dy) - xhat * mean(dy * xhat))``, 0.032 with
    FusedBatchNormGrad, about 0.018 compiled. Returns (y, mean, biased variance).
    """
    import tensorflow as tf

    @tf.custom_gradient
    def norm(x, gamma, beta):
        y, mean, variance = _compiled("forward")(x, gamma, beta, epsilon)

        def grad(dy, *_):  # mean and variance only feed the moving averages
            return _batch_norm_backward(dy, x, gamma, mean, variance, epsilon)

        return (y, mean, variance), grad

    y, mean, variance = norm(x, gamma, beta)
    return y, tf.stop_gradient(mean), tf.stop_gradient(variance)


def _batch_norm_forward(x, gamma, beta, epsilon):
    import tensorflow as tf

    mean = tf.reduce_mean(x, axis=0)
    variance = tf.reduce_mean(tf.square(x - mean), axis=0)
    scale = gamma * tf.math.rsqrt(variance + epsilon)
    return x * scale + (beta - mean * scale), mean, variance


def _batch_norm_backward_graph(dy, x, gamma, mean, variance, epsilon):
    import tensorflow as tf

    n = tf.cast(tf.shape(x)[0], "float32")
    inv_std = tf.math.rsqrt(variance + epsilon)
    centred = x - mean  # XLA fuses this into both passes; no tensor is stored
    dbeta = tf.reduce_sum(dy, axis=0)
    dgamma = tf.reduce_sum(dy * centred, axis=0) * inv_std  # sum(dy * xhat)
    scale = gamma * inv_std
    # dx = scale * (dy - dbeta / n - xhat * dgamma / n)
    dx = scale * dy - (scale * inv_std * dgamma / n) * centred - scale * dbeta / n
    return dx, dgamma, dbeta


def _batch_norm_backward(dy, x, gamma, mean, variance, epsilon):
    """(dx, dgamma, dbeta) of training batch norm over (rows, channels), XLA-compiled."""
    return _compiled("backward")(dy, x, gamma, mean, variance, epsilon)


_COMPILED = {}


def _compiled(which: str):
    """The XLA-compiled batch-norm ``forward`` or ``backward``, made on first use (XLA compiles per shape)."""
    if which not in _COMPILED:
        import tensorflow as tf

        graph = {"forward": _batch_norm_forward, "backward": _batch_norm_backward_graph}[which]
        _COMPILED[which] = tf.function(graph, jit_compile=True, reduce_retracing=True)
    return _COMPILED[which]
