"""Each model.fast_layers layer computes the Keras layer it replaces: values, gradients, saved weights."""

from __future__ import annotations

import numpy as np
import pytest

from model import fast_layers, network

# (width, bands, filters): the demo's six timbral convs (--frontend-filters 4) and one above
# the banded threshold (TF's own Conv2D there).
SHAPES = [(7, 38, 4), (3, 38, 8), (1, 38, 16), (7, 86, 4), (3, 86, 8), (7, 38, 32), (7, 67, 64)]


def pair(width, bands, filters, seed=0):
    """A TimbralConv and a plain Conv2D with the same random weights, built for (time, 96 mels, 1)."""
    import keras

    layers = [
        cls(filters, (width, bands), padding="valid", activation="relu")
        for cls in (fast_layers.TimbralConv, keras.layers.Conv2D)
    ]
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((width, bands, 1, filters)).astype("float32") * 0.2, rng.standard_normal(filters)]
    for layer in layers:
        layer.build((None, 40 + width - 1, 96, 1))
        layer.set_weights([weights[0], weights[1].astype("float32")])
    return layers


@pytest.mark.parametrize("width,bands,filters", SHAPES)
def test_timbral_conv_equals_conv2d_values_and_gradients(width, bands, filters):
    import tensorflow as tf

    banded, plain = pair(width, bands, filters)
    x = tf.constant(np.random.default_rng(1).standard_normal((3, 40 + width - 1, 96, 1)).astype("float32"))
    results = []
    for layer in (banded, plain):
        with tf.GradientTape() as tape:
            y = layer(x)
            loss = tf.reduce_sum(tf.square(y))
        results.append([y.numpy(), *[g.numpy() for g in tape.gradient(loss, layer.trainable_variables)]])
    assert results[0][0].shape == (3, 40, 96 - bands + 1, filters)
    for got, want in zip(results[0], results[1]):
        scale = np.abs(want).max()
        # measured: at most 5.5e-7 of the largest value (float32 sums in another order)
        assert np.abs(got - want).max() <= 1e-6 * scale


def test_few_filters_do_not_use_conv2d(monkeypatch):
    """The banded path is what runs below the threshold (TF's Conv2D is never called)."""
    import keras
    import tensorflow as tf

    banded, plain = pair(7, 38, 4)
    want = plain(tf.ones((2, 46, 96, 1))).numpy()

    def refuse(self, inputs, kernel):
        raise AssertionError("Conv2D called")

    monkeypatch.setattr(keras.layers.Conv2D, "convolution_op", refuse)
    np.testing.assert_allclose(banded(tf.ones((2, 46, 96, 1))).numpy(), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(AssertionError, match="Conv2D called"):
        pair(7, 38, fast_layers.BANDED_MAX_FILTERS + 1)[0](tf.ones((2, 46, 96, 1)))


def gradients_and_outputs(layer, x):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(tf.square(y))
    return [y.numpy(), *[g.numpy() for g in tape.gradient(loss, layer.trainable_variables)]]


def frame_conv_exact(x, kernel, bias):
    """Float64 outputs and gradients of ``relu(frames @ kernel + bias)`` under ``sum(y**2)``, and
    for each the sum of the absolute values of its terms (the scale its float32 error is bounded by)."""
    size, _, filters = kernel.shape
    frames = x[:, : x.shape[1] // size * size, 0].reshape(-1, size).astype(np.float64)
    w, absolute = kernel[:, 0, :].astype(np.float64), np.abs(kernel[:, 0, :]).astype(np.float64)
    pre = frames @ w + bias
    dy = 2 * np.maximum(pre, 0)  # d sum(y^2) / d pre, zero where the ReLU is off
    shape = (x.shape[0], -1, filters)
    exact = [np.maximum(pre, 0).reshape(shape), (frames.T @ dy)[:, None, :], dy.sum(0)]
    scale = [(np.abs(frames) @ absolute + np.abs(bias)).reshape(shape), (np.abs(frames).T @ dy)[:, None, :], dy.sum(0)]
    return exact, scale


@pytest.mark.parametrize("n_samples", [48128, 1000])  # a patch; a length that leaves 1 sample over
def test_frame_conv_equals_the_exact_strided_conv(n_samples, monkeypatch):
    """Outputs and gradients of the matmul form equal the exact (float64) strided conv.

    Each value is a float32 sum (of 3 products forward, of up to 32,084 backward), so its error
    is bounded relative to the sum of its terms' magnitudes, not to the largest value: a
    gradient entry whose terms cancel is small but as inexact as its terms are large. Measured
    on an AVX-512 CPU, worst over both lengths: outputs 1.7e-7, kernel gradient 2.0e-7 (4.1e-7
    with ``ONEDNN_MAX_CPU_ISA=AVX2``, 2.0e-7 with ``TF_ENABLE_ONEDNN_OPTS=0``), bias gradient
    2.0e-6 on every path. Keras' own Conv1D, for comparison, is off by up to 3.6e-6 in the
    kernel gradient on the AVX2 path (oneDNN's weight-gradient kernel sums in long runs).
    """
    import keras
    import tensorflow as tf

    layer = fast_layers.FrameConv(16, 3, strides=3, activation="relu")
    rng = np.random.default_rng(3)
    kernel, bias = rng.standard_normal((3, 1, 16)).astype("float32"), rng.standard_normal(16).astype("float32")
    layer.build((None, n_samples, 1))
    layer.set_weights([kernel, bias])
    x = rng.standard_normal((2, n_samples, 1)).astype("float32")
    # the matmul form only: Conv1D's own call (FrameConv's fallback) must not run
    monkeypatch.setattr(keras.layers.Conv1D, "call", lambda *a: 1 / 0)
    got = gradients_and_outputs(layer, tf.constant(x))
    assert got[0].shape == (2, n_samples // 3, 16)
    for value, exact, scale in zip(got, *frame_conv_exact(x, kernel, bias)):
        assert np.all(np.abs(value - exact) <= 4e-6 * scale)


def test_saved_model_with_timbral_convs_loads_with_the_same_outputs(tmp_path):
    import keras

    model = network.build_model(
        "spectrogram", 5, **network.paper_spectrogram_blocks(2), backend_filters=8, dense_units=8
    )
    assert isinstance(model.get_layer("timbral_0_conv"), fast_layers.TimbralConv)
    x = np.random.default_rng(2).standard_normal((2, network.dsp.PATCH_FRAMES, network.dsp.N_MELS)).astype("float32")
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.get_layer("timbral_0_conv"), fast_layers.TimbralConv)
    np.testing.assert_array_equal(loaded(x)["scores"].numpy(), model(x)["scores"].numpy())


@pytest.mark.parametrize("shape", [(4, 300, 16), (3, 20, 11, 4), (2, 9000, 8), (2, 100, 90, 3)])
@pytest.mark.parametrize("form", ["fused", "xla"])
def test_fused_batch_norm_trains_like_keras_batch_norm(shape, form, monkeypatch):
    """Outputs and gradients equal the exact (float64) batch norm; the moving statistics Keras' own.

    Both forms are checked on every shape: TF's fused kernels and the XLA-compiled ones
    (which large maps use); the test asserts which one ran. The gradients are compared with
    float64 rather than with Keras' layer because over 18,000 positions Keras' own float32
    sums are off by up to 8e-6 of the largest value.
    """
    import keras
    import tensorflow as tf

    threshold = 1 if form == "xla" else 10**9
    monkeypatch.setattr(fast_layers, "BN_XLA_MIN_POSITIONS", threshold)
    calls = []
    backward = fast_layers._batch_norm_backward
    monkeypatch.setattr(fast_layers, "_batch_norm_backward", lambda *a: calls.append(1) or backward(*a))
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(shape) * 3 + 1).astype("float32")
    gamma = rng.standard_normal(shape[-1]).astype("float32")
    loss_weights = np.sin(np.arange(x.size)).reshape(shape).astype("float32")
    results = []
    for cls in (fast_layers.FusedBatchNorm, keras.layers.BatchNormalization):
        layer = cls(momentum=0.9)
        layer.build(shape)
        layer.gamma.assign(gamma)
        x_t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x_t)
            y = layer(x_t, training=True)
            loss = tf.reduce_sum(y * loss_weights)
        grads = tape.gradient(loss, [x_t, layer.gamma, layer.beta])
        stats = [layer.moving_mean.numpy(), layer.moving_variance.numpy(), layer(x_t, training=False).numpy()]
        results.append(([y.numpy(), *[g.numpy() for g in grads]], stats))
    assert len(calls) == (1 if form == "xla" else 0)
    for got, want in zip(results[0][0], exact_batch_norm(x, gamma, loss_weights)):
        # measured: at most 6.5e-6 of the largest value (the beta gradient, 18,000 positions,
        # fused kernel), 4.2e-6 for the XLA gradient; Keras' own layer 8.2e-6
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    for got, want in zip(results[0][1], results[1][1]):
        # measured: under 7e-7 of the largest value
        assert np.abs(got - want).max() <= 2e-6 * np.abs(want).max()


def exact_batch_norm(x, gamma, loss_weights, epsilon=1e-3):
    """Training batch norm (beta 0) and its gradients for ``sum(y * loss_weights)``, in float64."""
    axes = tuple(range(x.ndim - 1))
    x = x.astype("float64")
    n = x.size / x.shape[-1]
    inv_std = 1 / np.sqrt(x.var(axes) + epsilon)
    x_hat = (x - x.mean(axes)) * inv_std
    dy = loss_weights.astype("float64")
    dbeta, dgamma = dy.sum(axes), (dy * x_hat).sum(axes)
    dx = gamma * inv_std * (dy - dbeta / n - x_hat * dgamma / n)
    return [x_hat * gamma, dx, dgamma, dbeta]


def test_waveform_network_uses_xla_batch_norm_only_for_long_maps():
    """The threshold picks the waveform's first two maps (16,042 and 16,040 steps), not the third."""
    import keras

    model = network.build_model("waveform", 5, sample_filters=(4, 4, 4, 4, 4, 4, 4), backend_filters=8, dense_units=8)
    long = [
        layer.name
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        and np.prod(layer.input.shape[1:-1]) >= fast_layers.BN_XLA_MIN_POSITIONS
    ]
    assert long == ["sample_0_bn", "sample_1_bn"]


def block_chain(pool_cls, weights):
    """conv -> ReLU -> batch norm -> max-pool 3, the waveform front-end's block, with ``pool_cls``."""
    import keras

    conv = keras.layers.Conv1D(8, 3, activation="relu")
    norm = fast_layers.FusedBatchNorm()
    pool = pool_cls(3)
    conv.build((None, None, 4))
    conv.set_weights(weights)
    norm.build((None, None, 8))
    return conv, norm, pool


@pytest.mark.parametrize("steps", [602, 603])  # 600 conv outputs (pooled whole), 601 (one left over)
def test_block_max_pool_equals_max_pooling_1d(steps):
    """Values always; gradients equal on tie-free input and, through ReLU + batch norm, on the block.

    The block's ReLU zeros tie in the pool's windows; the two pools share their gradient out
    differently there, but the ReLU discards it, so the conv's gradients agree.
    """
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(5)
    x = tf.constant(rng.standard_normal((3, steps, 4)).astype("float32"))
    weights = [rng.standard_normal((3, 4, 8)).astype("float32") * 0.5, rng.standard_normal(8).astype("float32") * 0.1]
    loss_weights = tf.constant(np.sin(np.arange(3 * (steps // 3) * 8)).reshape(3, -1, 8).astype("float32"))
    tie_free, block = [], []
    for cls in (fast_layers.BlockMaxPool, keras.layers.MaxPooling1D):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = cls(3)(x)
            loss = tf.reduce_sum(y * loss_weights[:, :, :4])  # (3, steps // 3, 4)
        tie_free.append([y.numpy(), tape.gradient(loss, x).numpy()])
        conv, norm, pool = block_chain(cls, weights)
        with tf.GradientTape() as tape:
            y = pool(norm(conv(x), training=True))  # (3, (steps - 2) // 3, 8)
            loss = tf.reduce_sum(y * loss_weights[:, : y.shape[1]])
        block.append([y.numpy(), *[g.numpy() for g in tape.gradient(loss, conv.trainable_variables)]])
    assert tie_free[0][0].shape == (3, steps // 3, 4)
    np.testing.assert_array_equal(tie_free[0][0], tie_free[1][0])
    np.testing.assert_array_equal(tie_free[0][1], tie_free[1][1])
    relu_output = tf.nn.relu(tf.nn.conv1d(x, weights[0], 1, "VALID") + weights[1]).numpy()
    assert (relu_output == 0).mean() > 0.3  # the block does have ties
    for got, want in zip(*block):
        # measured: outputs equal, the conv's gradients within 7.3e-7 of their largest value (the
        # batch norm's sums see other values at the discarded positions, so another rounding)
        assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()


def test_block_max_pool_shares_tied_gradients():
    """Where a window holds tied maxima the gradient is split equally (MaxPool gives it to the first)."""
    import tensorflow as tf

    x = tf.constant([[[1.0], [1.0], [0.0], [2.0], [5.0], [3.0]]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fast_layers.BlockMaxPool(3)(x)
    np.testing.assert_array_equal(y.numpy()[0, :, 0], [1.0, 5.0])
    np.testing.assert_array_equal(tape.gradient(y, x).numpy()[0, :, 0], [0.5, 0.5, 0.0, 0.0, 1.0, 0.0])


def test_waveform_weights_saved_with_keras_layers_load_into_the_fast_network(tmp_path):
    """Weights saved by the network built with Keras' MaxPooling1D load unchanged, same outputs.

    Keras' weight files name each layer by its class (``max_pooling1d_2``), so this checks that
    the pools, which have no variables, do not shift what the other layers' entries are called.
    """
    from unittest import mock

    import keras

    sizes = dict(sample_filters=(4, 4, 4, 8, 8, 8, 8), backend_filters=8, dense_units=8)
    with mock.patch.object(network, "BlockMaxPool", keras.layers.MaxPooling1D):
        plain = network.build_model("waveform", 5, **sizes)
    plain.save_weights(tmp_path / "plain.weights.h5")
    fast = network.build_model("waveform", 5, **sizes)
    assert isinstance(fast.get_layer("sample_1_pool"), fast_layers.BlockMaxPool)
    assert isinstance(fast.get_layer("sample_0_conv"), fast_layers.FrameConv)
    fast.load_weights(tmp_path / "plain.weights.h5")
    x = np.random.default_rng(6).standard_normal((2, network.dsp.PATCH_SAMPLES)).astype("float32")
    np.testing.assert_allclose(fast(x)["scores"].numpy(), plain(x)["scores"].numpy(), rtol=1e-5, atol=1e-6)
    fast.save(tmp_path / "fast.keras")
    loaded = keras.saving.load_model(tmp_path / "fast.keras")
    assert isinstance(loaded.get_layer("sample_1_pool"), fast_layers.BlockMaxPool)
    np.testing.assert_array_equal(loaded(x)["scores"].numpy(), fast(x)["scores"].numpy())
