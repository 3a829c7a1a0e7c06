"""The timbral convs' banded form (model.network.TimbralConv) computes TF's Conv2D, values and gradients."""

from __future__ import annotations

import numpy as np
import pytest

from model import network

# (width, bands, filters): the demo's six timbral convs (--frontend-filters 4) and one above
# the banded threshold (TF's own Conv2D there).
SHAPES = [(7, 38, 4), (3, 38, 8), (1, 38, 16), (7, 86, 4), (3, 86, 8), (7, 38, 32), (7, 67, 64)]


def pair(width, bands, filters, seed=0):
    """A TimbralConv and a plain Conv2D with the same random weights, built for (time, 96 mels, 1)."""
    import keras

    layers = [
        cls(filters, (width, bands), padding="valid", activation="relu")
        for cls in (network.TimbralConv, keras.layers.Conv2D)
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
        pair(7, 38, network.BANDED_MAX_FILTERS + 1)[0](tf.ones((2, 46, 96, 1)))


def test_saved_model_with_timbral_convs_loads_with_the_same_outputs(tmp_path):
    import keras

    model = network.build_model("spectrogram", 5, **network.seed_spectrogram_blocks(2), backend_filters=8, dense_units=8)
    assert isinstance(model.get_layer("timbral_0_conv"), network.TimbralConv)
    x = np.random.default_rng(2).standard_normal((2, network.dsp.PATCH_FRAMES, network.dsp.N_MELS)).astype("float32")
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.get_layer("timbral_0_conv"), network.TimbralConv)
    np.testing.assert_array_equal(loaded(x)["scores"].numpy(), model(x)["scores"].numpy())
