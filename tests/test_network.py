"""The Keras networks: stage shapes, exact parameter counts, one shared back-end, serving module."""

from __future__ import annotations

import numpy as np
import pytest

from model import dsp, export, network, serving

N_TAGS = 50

# (frontend, preset) -> shapes without batch of (front-end output, pooled, embedding, scores), params.
# The musicnn spectrogram model has 792,079 weights: the MTT_musicnn checkpoint's 792,081 minus
# Adam's two scalars beta1_power / beta2_power (64 model variables + 2 = 66).
EXPECTED = {
    ("waveform", "pons2018"): ((21, 256), (1024,), (500,), (N_TAGS,), 5_384_862),
    ("waveform", "musicnn"): ((21, 256), (896,), (200,), (N_TAGS,), 616_938),
    ("spectrogram", "pons2018"): ((187, 464), (1024,), (500,), (N_TAGS,), 5_931_198),
    ("spectrogram", "musicnn"): ((187, 561), (1506,), (200,), (N_TAGS,), 792_079),
}


def example_batch(frontend: str, batch: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if frontend == "waveform":
        return rng.normal(0, 0.1, (batch, dsp.PATCH_SAMPLES)).astype(np.float32)
    return rng.uniform(0, 3, (batch, dsp.PATCH_FRAMES, dsp.N_MELS)).astype(np.float32)


@pytest.mark.parametrize("frontend,preset", sorted(EXPECTED))
def test_stage_shapes_and_parameter_count(frontend, preset):
    frontend_shape, pooled_shape, embedding_shape, scores_shape, n_params = EXPECTED[(frontend, preset)]
    model = network.build_model(frontend, N_TAGS, preset, stages=True)
    outputs = model(example_batch(frontend), training=False)
    assert tuple(outputs["frontend"].shape) == (2, *frontend_shape)
    assert tuple(outputs["pooled"].shape) == (2, *pooled_shape)
    assert tuple(outputs["embedding"].shape) == (2, *embedding_shape)
    assert tuple(outputs["scores"].shape) == (2, *scores_shape)
    scores = np.asarray(outputs["scores"])
    assert np.all((scores >= 0) & (scores <= 1))
    assert model.count_params() == n_params


def test_build_model_outputs_scores_and_embedding_only():
    model = network.build_model("spectrogram", 7, "musicnn")
    outputs = model(example_batch("spectrogram", batch=3), training=False)
    assert sorted(outputs) == ["embedding", "scores"]
    assert tuple(outputs["scores"].shape) == (3, 7)
    assert len(model.weights) == 64  # the checkpoint's 66 variables less Adam's beta1/beta2 powers


def test_spectrogram_pons2018_is_the_papers_front_end():
    config = network.make_config(N_TAGS, "pons2018")
    assert network.make_config(N_TAGS, "seed") == config  # the preset's old name
    assert sum(filters for _, _, filters in config.timbral) == 224  # 7n, n = 16
    assert sum(filters for _, filters in config.temporal) == 240  # 15n
    assert [int(fraction * config.n_mels) for _, fraction, _ in config.timbral] == [86, 86, 86, 38, 38, 38]
    assert (config.backend_filters, config.dense_units) == (512, 500)
    musicnn = network.make_config(N_TAGS, "musicnn")
    assert [int(fraction * musicnn.n_mels) for _, fraction, _ in musicnn.timbral] == [38, 67]
    assert musicnn.input_batch_norm and not config.input_batch_norm


def test_both_frontends_feed_the_same_backend_function(monkeypatch):
    calls = []
    original = network.backend

    def spy(features, config):
        calls.append(tuple(features.shape[1:]))
        return original(features, config)

    monkeypatch.setattr(network, "backend", spy)
    waveform = network.build_model("waveform", N_TAGS, "pons2018")
    spectrogram = network.build_model("spectrogram", N_TAGS, "pons2018")
    assert calls == [(21, 256), (187, 464)]

    def backend_layers(model):
        return [(type(layer).__name__, layer.name) for layer in model.layers if layer.name.startswith("backend_")]

    assert backend_layers(waveform) == backend_layers(spectrogram)
    assert len(backend_layers(waveform)) == 16
    # Identical weights except the first conv's input channels (256 vs 464).
    shapes = {w.path: tuple(w.shape) for w in waveform.weights if w.path.startswith("backend_")}
    other = {w.path: tuple(w.shape) for w in spectrogram.weights if w.path.startswith("backend_")}
    assert shapes.pop("backend_0_conv/kernel") == (7, 256, 512)
    assert other.pop("backend_0_conv/kernel") == (7, 464, 512)
    assert shapes == other


@pytest.mark.parametrize(
    "frontend,preset,frames",
    [
        ("spectrogram", "pons2018", 181),  # the paper's code: a "valid" conv of 7 frames, 187 -> 181
        ("waveform", "pons2018", 15),  # 21 -> 15
        ("spectrogram", "musicnn", 187),  # musicnn pads it (its checkpoints need that)
        ("waveform", "musicnn", 21),
    ],
)
def test_first_backend_conv_is_unpadded_in_the_paper_preset_only(frontend, preset, frames):
    model = network.build_model(frontend, N_TAGS, preset, backend_filters=8, dense_units=8)
    assert tuple(model.get_layer("backend_0_conv").output.shape[1:]) == (frames, 8)
    for name in ("backend_1_conv", "backend_2_conv"):  # "same": the residual additions keep the length
        layer = model.get_layer(name)
        assert layer.output.shape[1] == layer.input.shape[1]


def test_overrides_change_sizes():
    model = network.build_model("spectrogram", 10, "pons2018", dense_units=32, backend_filters=16, stages=True)
    outputs = model(example_batch("spectrogram"), training=False)
    assert tuple(outputs["embedding"].shape) == (2, 32)
    assert tuple(outputs["pooled"].shape) == (2, 32)


@pytest.mark.parametrize(
    "kwargs,bad",
    [
        (dict(frontend="mfcc", n_tags=5), "'mfcc'"),
        (dict(frontend="waveform", n_tags=5, preset="huge"), "'huge'"),
        (dict(frontend="waveform", n_tags=5, dense_unitz=3), "dense_unitz"),
        (dict(frontend="spectrogram", n_tags=5, temporal_pooling="median"), "'median'"),
    ],
)
def test_bad_values_raise_value_error_naming_them(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        network.build_model(**kwargs)


@pytest.mark.parametrize("frontend", ["spectrogram", "waveform"])
def test_serving_module_round_trip(frontend, tmp_path):
    model = network.build_model(frontend, 5, "musicnn", dense_units=16)
    module = serving.build_serving_module(model, frontend)
    tags = [f"tag{i}" for i in range(5)]
    info = export.save_serving_model(module, str(tmp_path / "m"), tags=tags, info={"name": "t", "frontend": frontend})
    assert info["n_tags"] == 5
    loaded = export.load_serving_model(str(tmp_path / "m"))
    waveform = example_batch("waveform", batch=3, seed=1)
    outputs = loaded.predict(waveform)
    export.check_outputs(outputs, 5)
    assert outputs["embedding"].shape == (3, 16)
    features = dsp.log_mel_patches(waveform) if frontend == "spectrogram" else waveform
    expected = model(features, training=False)
    np.testing.assert_allclose(outputs["scores"], np.asarray(expected["scores"]), atol=1e-6)
    np.testing.assert_allclose(outputs["embedding"], np.asarray(expected["embedding"]), atol=1e-5)


def randomised_musicnn(n_tags: int = 6, seed: int = 3):
    """A musicnn-preset model with random weights and batch-norm statistics; about half of every
    batch norm's gammas negative, so the fast form's sign handling is exercised on every branch."""
    model = network.build_model("spectrogram", n_tags, "musicnn", dense_units=16)
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        shape = tuple(weight.shape)
        if weight.path.endswith("moving_variance"):
            weight.assign(rng.uniform(0.2, 2.0, shape).astype(np.float32))
        elif weight.path.endswith(("gamma", "moving_mean", "beta", "bias")):
            weight.assign(rng.normal(0, 1, shape).astype(np.float32))
        else:  # kernels
            weight.assign(rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape).astype(np.float32))
    return model


def test_fast_frontend_computes_the_keras_model():
    from model import fast_frontend

    model = randomised_musicnn()
    gammas = np.concatenate([np.asarray(model.get_layer(f"temporal_{i}_bn").gamma) for i in range(3)])
    assert (gammas < 0).sum() > 30 and (gammas > 0).sum() > 30
    fast = fast_frontend.FastSpectrogramModel(model)
    log_mel = example_batch("spectrogram", batch=4, seed=5)
    stages = network.build_model("spectrogram", 6, "musicnn", dense_units=16, stages=True)
    stages.set_weights(model.get_weights())
    reference = stages(log_mel, training=False)
    got = fast(log_mel)
    frontend = np.asarray(fast.frontend(log_mel))
    # Measured: front-end features equal to ~1e-6 (float32 rounding of the conv sums), scores ~1e-7.
    np.testing.assert_allclose(frontend, np.asarray(reference["frontend"]), atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got["scores"]), np.asarray(reference["scores"]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(got["embedding"]), np.asarray(reference["embedding"]), atol=2e-5, rtol=1e-5)


def test_band_matrices_are_the_same_valid_convolutions():
    import tensorflow as tf

    from model import fast_frontend

    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(8, 3)).astype(np.float32)  # over time: (length, filters)
    frames = rng.normal(size=(2, 20)).astype(np.float32)
    matrix = fast_frontend.time_band_matrix(tf.constant(kernel), 5).numpy()  # outputs 0..4 read 12 frames
    got = (matrix @ frames[:, 4:16].T).reshape(5, 3, 2).transpose(2, 0, 1)
    expected = tf.nn.conv1d(frames[..., None], kernel[:, None, :], 1, "VALID").numpy()[:, 4:9]
    np.testing.assert_allclose(got, expected, atol=1e-5)

    kernel = rng.normal(size=(3, 4, 2)).astype(np.float32)  # (time taps, frequency taps, filters)
    image = rng.normal(size=(1, 6, 10)).astype(np.float32)  # (batch, time, frequency)
    rows = fast_frontend.FastSpectrogramModel.shifted_bands(tf.constant(image), 3, (1, 1)).numpy()
    assert rows.shape == (10 * 3, 6)
    matrix = fast_frontend.frequency_band_matrix(tf.constant(kernel), 3).numpy()
    got = (matrix @ rows[2 * 3 : (2 + 3 + 3) * 3]).reshape(3, 2, 6).transpose(2, 0, 1)  # outputs 2..4
    padded = np.pad(image, [(0, 0), (1, 1), (0, 0)])[..., None]
    expected = tf.nn.conv2d(padded, kernel[:, :, None, :], 1, "VALID").numpy()[0, :, 2:5]
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("frequency_block, time_block", [(1, 7), (5, 16), (64, 187)])
def test_fast_frontend_is_the_same_for_any_block_size(frequency_block, time_block):
    """Blocks that overlap at the top (5), one block for everything (64 > the 59 positions), and a
    time block that leaves a ragged last block give the default's features to float32 rounding."""
    from model import fast_frontend

    model = randomised_musicnn()
    log_mel = example_batch("spectrogram", batch=2, seed=6)
    default = np.asarray(fast_frontend.FastSpectrogramModel(model).frontend(log_mel))
    other = fast_frontend.FastSpectrogramModel(model, frequency_block, time_block).frontend(log_mel)
    np.testing.assert_allclose(np.asarray(other), default, atol=1e-5, rtol=1e-5)


def test_serving_module_serves_the_fast_form_only_where_it_applies(tmp_path):
    from model import fast_frontend

    musicnn = serving.build_serving_module(randomised_musicnn(), "spectrogram")
    assert musicnn.graph == export.FAST_GRAPH
    seed = network.build_model("spectrogram", 5, "pons2018", dense_units=8)
    assert not fast_frontend.supports(seed)
    assert serving.build_serving_module(seed, "spectrogram").graph == export.KERAS_GRAPH
    assert (
        serving.build_serving_module(network.build_model("waveform", 5, "musicnn"), "waveform").graph
        == export.KERAS_GRAPH
    )
    info = export.save_serving_model(musicnn, str(tmp_path / "m"), tags=[f"t{i}" for i in range(6)], info={"name": "m"})
    assert info["serving_graph"] == export.FAST_GRAPH
    with pytest.raises(ValueError, match="max-after"):
        fast_frontend.FastSpectrogramModel(seed)
