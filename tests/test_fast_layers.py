"""The timbral convs' banded form (model.fast_layers.TimbralConv) computes TF's Conv2D, values and gradients."""

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


@pytest.mark.parametrize("n_samples", [48128, 1000])  # a patch; a length that leaves 1 sample over
def test_frame_conv_equals_strided_conv1d(n_samples, monkeypatch):
    import keras
    import tensorflow as tf

    layers = [cls(16, 3, strides=3, activation="relu") for cls in (fast_layers.FrameConv, keras.layers.Conv1D)]
    rng = np.random.default_rng(3)
    weights = [rng.standard_normal((3, 1, 16)).astype("float32"), rng.standard_normal(16).astype("float32")]
    for layer in layers:
        layer.build((None, n_samples, 1))
        layer.set_weights(weights)
    x = tf.constant(rng.standard_normal((2, n_samples, 1)).astype("float32"))
    want = gradients_and_outputs(layers[1], x)
    monkeypatch.setattr(keras.layers.Conv1D, "convolution_op", lambda *a: 1 / 0)  # the matmul form only
    got = gradients_and_outputs(layers[0], x)
    assert got[0].shape == (2, n_samples // 3, 16)
    for g, w in zip(got, want):
        # measured: 0 for the outputs, at most 3e-7 of the largest gradient (sums in another order)
        assert np.abs(g - w).max() <= 1e-6 * np.abs(w).max()


def test_saved_model_with_timbral_convs_loads_with_the_same_outputs(tmp_path):
    import keras

    model = network.build_model(
        "spectrogram", 5, **network.seed_spectrogram_blocks(2), backend_filters=8, dense_units=8
    )
    assert isinstance(model.get_layer("timbral_0_conv"), fast_layers.TimbralConv)
    x = np.random.default_rng(2).standard_normal((2, network.dsp.PATCH_FRAMES, network.dsp.N_MELS)).astype("float32")
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.get_layer("timbral_0_conv"), fast_layers.TimbralConv)
    np.testing.assert_array_equal(loaded(x)["scores"].numpy(), model(x)["scores"].numpy())


@pytest.mark.parametrize("shape", [(4, 300, 16), (3, 20, 11, 4)])
def test_fused_batch_norm_trains_like_keras_batch_norm(shape):
    """Outputs, gradients and the moving statistics after a training step equal Keras' own."""
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(4)
    x = tf.constant((rng.standard_normal(shape) * 3 + 1).astype("float32"))
    results = []
    for cls in (fast_layers.FusedBatchNorm, keras.layers.BatchNormalization):
        layer = cls(momentum=0.9)
        layer.build(shape)
        layer.gamma.assign(rng.standard_normal(shape[-1]).astype("float32") if not results else results[0][-1])
        gamma = layer.gamma.numpy()
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.sin(tf.reshape(tf.range(tf.size(y), dtype=tf.float32), shape)))
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        stats = [layer.moving_mean.numpy(), layer.moving_variance.numpy()]
        results.append([y.numpy(), *[g.numpy() for g in grads], *stats, layer(x, training=False).numpy(), gamma])
    for got, want in zip(results[0], results[1]):
        # measured: at most 3.1e-6 of the largest value for the gamma gradient (a sum over every
        # position, in another order), under 7e-7 for the rest
        assert np.abs(got - want).max() <= 5e-6 * np.abs(want).max()
