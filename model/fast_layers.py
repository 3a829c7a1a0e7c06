"""Faster forms of three Keras layers of :mod:`model.network` for CPU training, with the layers' own variables.

TensorFlow's CPU convolutions are slow when a conv has one input channel and few filters: they
cannot fill a dense GEMM, and the demo's small networks are made of such convs. Keras' batch
norm computes its training statistics and gradient in several passes over the tensor, which
the sample-level front-end's (batch, 16,042, filters) maps make expensive. Each layer here
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
    reshaping the samples to (batch, frames, kernel_size) gives the same sums in one GEMM,
    about twice as fast on a CPU as TF's one-channel Conv1D (measured 0.034 vs 0.060 CPU s,
    forward + backward, batch 16 of 48,128 samples, 16 filters). Same variables as Conv1D.
    """

    def convolution_op(self, inputs, kernel):
        size, channels, filters = kernel.shape
        framed = (self.strides, self.dilation_rate, self.padding, self.data_format) == (
            (size,),
            (1,),
            "valid",
            "channels_last",
        )
        if not framed or channels != 1:
            return super().convolution_op(inputs, kernel)
        n_frames = inputs.shape[1] // size
        frames = ops.reshape(inputs[:, : n_frames * size, 0], (-1, n_frames, size))
        return ops.matmul(frames, kernel[:, 0, :])  # (batch, frames, filters)


@keras.saving.register_keras_serializable(package="tagscale")
class FusedBatchNorm(layers.BatchNormalization):
    """BatchNormalization whose training step is TensorFlow's fused batch-norm kernel.

    The fused kernel normalises and returns the batch statistics in one pass and has a
    one-kernel gradient: forward + backward over (16, 16,042, 16) took 0.051 instead of 0.083
    CPU s. Inference, and anything but a plain last-axis norm on TensorFlow, is Keras' own code.
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
        y, mean, variance, *_ = tf.compat.v1.nn.fused_batch_norm(
            tf.reshape(x, [shape[0], -1, 1, channels]),
            tf.cast(self.gamma, "float32"),
            tf.cast(self.beta, "float32"),
            epsilon=self.epsilon,
            is_training=True,
        )
        # The kernel returns the unbiased variance (for its own running average); Keras
        # averages the biased one.
        n = tf.cast(tf.size(x) // channels, "float32")
        variance = variance * (n - 1.0) / n
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(tf.reshape(y, shape), self.compute_dtype)
