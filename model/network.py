"""The tagging networks: two front-ends, one shared back-end, Keras 3.

Read top to bottom: the config and its presets, the small blocks, the waveform front-end,
the spectrogram front-end, the back-end, then :func:`build_model` which joins one front-end
to the back-end. Two presets:

- ``pons2018`` (once called ``seed``): the paper's models (Pons et al. 2018, "End-to-end
  learning for music audio tagging at scale", and its code's ``models.py``): n = 16
  spectrogram front-end, 512-channel back-end whose first conv is unpadded ("valid": 187
  frames -> 181, the waveform's 21 -> 15), 500 dense units.
- ``musicnn``: exactly the sizes of the ``MTT_musicnn`` / ``MSD_musicnn`` checkpoints of the
  ``musicnn`` 0.1.0 wheel, so :mod:`model.pretrained` can load their weights one to one;
  its first back-end conv is padded ("same"), as musicnn's.

Every convolution here is ``conv -> ReLU -> batch norm``, the order of both public TF 1 code
bases (the weights only work in that order). Inputs are one patch: ``dsp.PATCH_SAMPLES``
waveform samples or ``dsp.PATCH_FRAMES`` x ``dsp.N_MELS`` log-mel frames. The timbral convs,
the waveform's first conv and every batch norm are :mod:`model.fast_layers` subclasses: the
Keras layers' function and variables, computed faster on a CPU.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import layers, ops

from model import dsp, features
from model.fast_layers import BlockMaxPool, FrameConv, FusedBatchNorm, TimbralConv

# -----------------------------------------------------------------------------
# config


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Sizes of every block; one instance is passed to all of them.

    Spectrogram front-end
        ``timbral``: ``(time width, fraction of the mel axis, filters)`` per 2-D conv; the
        kernel spans ``int(fraction * n_mels)`` bands. ``temporal``: ``(time length, filters)``
        per conv over time. ``temporal_pooling``: ``"mean_first"`` averages the mel axis before
        the temporal convs (the paper), ``"max_after"`` convolves every band with the same
        filter and max-pools over the bands afterwards (musicnn).
    Back-end
        ``backend_filters`` channels, ``backend_kernel`` frames, ``backend_time_pool`` the
        max-pool between the residual convs (1: none). ``backend_first_padding``: the first
        conv's padding in time, ``"valid"`` (the paper's code) or ``"same"`` (musicnn's); the
        other two are always "same", as their residual additions need. ``dense_pooling``: the global pooling
        also covers the front-end output and every back-end conv output (musicnn's dense
        connections), not only the last one. ``pooled_batch_norm``: batch norm on the pooled
        vector before the first dropout (musicnn).
    """

    n_tags: int = 50
    # inputs (one patch)
    n_samples: int = dsp.PATCH_SAMPLES
    n_frames: int = dsp.PATCH_FRAMES
    n_mels: int = dsp.N_MELS
    # waveform front-end: conv0 (stride = kernel) then one conv + max-pool block per entry
    sample_filters: tuple[int, ...] = (64, 64, 64, 128, 128, 128, 256)
    sample_kernel: int = 3
    # spectrogram front-end
    input_batch_norm: bool = False
    timbral: tuple[tuple[int, float, int], ...] = ()
    temporal: tuple[tuple[int, int], ...] = ()
    temporal_pooling: str = "mean_first"
    # back-end
    backend_filters: int = 512
    backend_kernel: int = 7
    backend_time_pool: int = 2
    backend_first_padding: str = "valid"
    dense_pooling: bool = False
    pooled_batch_norm: bool = False
    dense_units: int = 500
    dropout: float = 0.5
    # moving-statistics momentum of every batch norm (Keras' 0.99; short CPU runs need ~0.9)
    batch_norm_momentum: float = 0.99

    def __post_init__(self):
        if self.temporal_pooling not in ("mean_first", "max_after"):
            raise ValueError(f"temporal_pooling must be 'mean_first' or 'max_after', got {self.temporal_pooling!r}")
        if self.backend_first_padding not in ("valid", "same"):
            raise ValueError(f"backend_first_padding must be 'valid' or 'same', got {self.backend_first_padding!r}")
        if self.n_tags < 1:
            raise ValueError(f"n_tags must be positive, got {self.n_tags}")
        if not 0 <= self.batch_norm_momentum < 1:
            raise ValueError(f"batch_norm_momentum must be in [0, 1), got {self.batch_norm_momentum}")


def paper_spectrogram_blocks(n: int = 16) -> dict:
    """The paper's spectrogram front-end for ``n`` filters: 7n timbral + 15n temporal channels."""
    return dict(
        timbral=((7, 0.9, n), (3, 0.9, 2 * n), (1, 0.9, 4 * n), (7, 0.4, n), (3, 0.4, 2 * n), (1, 0.4, 4 * n)),
        temporal=((165, n), (128, 2 * n), (64, 4 * n), (32, 8 * n)),
    )


PAPER_PRESET = "pons2018"
PRESETS = {
    PAPER_PRESET: dict(**paper_spectrogram_blocks(16), temporal_pooling="mean_first", backend_first_padding="valid"),
    # musicnn 0.1.0 build_musicnn(num_filt=1.6, num_filt_midend=64, num_units_backend=200)
    "musicnn": dict(
        input_batch_norm=True,
        timbral=((7, 0.4, 204), (7, 0.7, 204)),
        temporal=((128, 51), (64, 51), (32, 51)),
        temporal_pooling="max_after",
        backend_filters=64,
        backend_time_pool=1,
        backend_first_padding="same",
        dense_pooling=True,
        pooled_batch_norm=True,
        dense_units=200,
    ),
}
PRESET_ALIASES = {"seed": PAPER_PRESET}  # old names that still build their preset


def make_config(n_tags: int, preset: str = PAPER_PRESET, **overrides) -> NetworkConfig:
    """The config of a preset (or its old name) with ``overrides`` (any :class:`NetworkConfig` field) applied."""
    preset = PRESET_ALIASES.get(preset, preset)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    fields = {field.name for field in dataclasses.fields(NetworkConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; fields are {sorted(fields)}")
    return NetworkConfig(**{**PRESETS[preset], "n_tags": n_tags, **overrides})


# -----------------------------------------------------------------------------
# small blocks


def batch_norm(x, config: NetworkConfig, name: str):
    return FusedBatchNorm(momentum=config.batch_norm_momentum, name=name)(x)


def conv_relu_bn(x, conv: layers.Layer, name: str, config: NetworkConfig):
    """``conv`` (with ReLU) followed by batch norm; the block every front- and back-end conv uses."""
    return batch_norm(conv(x), config, f"{name}_bn")


def max_over_frequency(x):
    """(batch, time, freq, channels) -> (batch, time, channels)."""
    return ops.max(x, axis=2)


# -----------------------------------------------------------------------------
# waveform front-end: sample-level CNN (Lee et al. 2017)


def waveform_frontend(waveform, config: NetworkConfig):
    """Sample-level CNN on raw waveform patches.

    Parameters
    ----------
    waveform : KerasTensor, shape (batch, n_samples)
    config : NetworkConfig

    Returns
    -------
    KerasTensor, shape (batch, time, sample_filters[-1])
        For 48,128 samples: 16,042 frames after conv0, then / 3 per block: 21 x 256.
    """
    x = layers.Reshape((config.n_samples, 1), name="waveform_channel")(waveform)  # (batch, samples, 1)
    k = config.sample_kernel
    conv0 = FrameConv(config.sample_filters[0], k, strides=k, activation="relu", name="sample_0_conv")
    x = conv_relu_bn(x, conv0, "sample_0", config)  # (batch, samples / 3, 64)
    for i, filters in enumerate(config.sample_filters[1:], start=1):
        conv = layers.Conv1D(filters, k, padding="valid", activation="relu", name=f"sample_{i}_conv")
        x = conv_relu_bn(x, conv, f"sample_{i}", config)
        x = BlockMaxPool(k, name=f"sample_{i}_pool")(x)  # (batch, time / 3, filters)
    return x


# -----------------------------------------------------------------------------
# spectrogram front-end: musically motivated timbral + temporal filters (Pons et al.)


def timbral_block(x, width: int, fraction: float, filters: int, config: NetworkConfig, name: str):
    """2-D conv spanning ``width`` frames x ``fraction`` of the mel axis, max-pooled over frequency.

    ``x``: (batch, time, mel, 1) -> (batch, time, filters). Time is zero-padded so that the
    output keeps every frame ("same" in time, "valid" in frequency).
    """
    bands = int(fraction * config.n_mels)
    x = layers.ZeroPadding2D((((width - 1) // 2, width // 2), (0, 0)), name=f"{name}_pad")(x) if width > 1 else x
    conv = TimbralConv(filters, (width, bands), padding="valid", activation="relu", name=f"{name}_conv")
    x = conv_relu_bn(x, conv, name, config)  # (batch, time, mel - bands + 1, filters)
    return max_over_frequency(x)  # (batch, time, filters)


def temporal_block(x, length: int, filters: int, config: NetworkConfig, name: str):
    """Conv of ``length`` frames over time only ("same" padding), max-pooled over what frequency is left.

    ``x``: (batch, time, freq, 1), freq = 1 after mean-pooling -> (batch, time, filters).
    """
    conv = layers.Conv2D(filters, (length, 1), padding="same", activation="relu", name=f"{name}_conv")
    x = conv_relu_bn(x, conv, name, config)  # (batch, time, freq, filters)
    return max_over_frequency(x)  # (batch, time, filters)


def spectrogram_frontend(log_mel, config: NetworkConfig):
    """Timbral and temporal branches over a log-mel patch, concatenated on channels.

    Parameters
    ----------
    log_mel : KerasTensor, shape (batch, n_frames, n_mels)
    config : NetworkConfig

    Returns
    -------
    KerasTensor, shape (batch, n_frames, sum of all block filters)
        pons2018: 187 x 464 (224 timbral + 240 temporal); musicnn: 187 x 561 (408 + 153).
    """
    x = layers.Reshape((config.n_frames, config.n_mels, 1), name="mel_channel")(log_mel)  # (batch, time, mel, 1)
    if config.input_batch_norm:
        x = batch_norm(x, config, "input_bn")
    branches = [
        timbral_block(x, width, fraction, filters, config, name=f"timbral_{i}")
        for i, (width, fraction, filters) in enumerate(config.timbral)
    ]
    if config.temporal_pooling == "mean_first":
        rhythm = ops.mean(x, axis=2, keepdims=True)  # (batch, time, 1, 1)
    else:
        rhythm = x  # (batch, time, mel, 1): one filter shared by every band, max over bands after
    branches += [
        temporal_block(rhythm, length, filters, config, name=f"temporal_{i}")
        for i, (length, filters) in enumerate(config.temporal)
    ]
    return layers.Concatenate(axis=-1, name="spectrogram_features")(branches)  # (batch, time, channels)


# -----------------------------------------------------------------------------
# shared back-end


def global_max_mean_pool(x, name: str):
    """(batch, time, channels) -> (batch, 2 * channels): per channel its max then its mean.

    Interleaved ``[max_0, mean_0, max_1, mean_1, ...]``, as the TF 1 code flattens its
    ``concat([max, mean], axis=2)``; the pretrained dense weights depend on this order.
    """
    pooled = ops.stack([ops.max(x, axis=1), ops.mean(x, axis=1)], axis=-1)  # (batch, channels, 2)
    return layers.Flatten(name=name)(pooled)


def backend(features, config: NetworkConfig) -> dict:
    """Shared back-end: three time convs with residuals, global pooling, two dense layers.

    Parameters
    ----------
    features : KerasTensor, shape (batch, time, channels)
        Any front-end's output.
    config : NetworkConfig

    Returns
    -------
    dict of KerasTensor
        ``pooled`` (batch, 2 * pooled channels), ``embedding`` (batch, dense_units): the
        penultimate dense layer after its batch norm, ``scores`` (batch, n_tags) in [0, 1].
    """
    f, k = config.backend_filters, config.backend_kernel

    def conv_block(x, i, padding="same"):
        conv = layers.Conv1D(f, k, padding=padding, activation="relu", name=f"backend_{i}_conv")
        return conv_relu_bn(x, conv, f"backend_{i}", config)  # (batch, time, f)

    # (batch, time - k + 1, f) unpadded ("valid", the paper's), (batch, time, f) "same" (musicnn's)
    x1 = conv_block(features, 0, config.backend_first_padding)
    x2 = layers.Add(name="backend_1_residual")([conv_block(x1, 1), x1])
    if config.backend_time_pool > 1:
        x2 = layers.MaxPooling1D(config.backend_time_pool, name="backend_time_pool")(x2)  # (batch, time / 2, f)
    x3 = layers.Add(name="backend_2_residual")([conv_block(x2, 2), x2])
    maps = [features, x1, x2, x3] if config.dense_pooling else [x3]
    pooled = layers.Concatenate(axis=-1, name="backend_pooled")(
        [global_max_mean_pool(m, name=f"backend_pool_{i}") for i, m in enumerate(maps)]
    )  # (batch, 2 * pooled channels)
    x = batch_norm(pooled, config, "backend_pooled_bn") if config.pooled_batch_norm else pooled
    x = layers.Dropout(config.dropout, name="backend_dropout_0")(x)
    x = layers.Dense(config.dense_units, activation="relu", name="backend_dense")(x)
    embedding = batch_norm(x, config, "backend_dense_bn")  # (batch, dense_units)
    x = layers.Dropout(config.dropout, name="backend_dropout_1")(embedding)
    # float32 even under mixed_float16 (Keras' guidance for model outputs): a float16 sigmoid
    # rounds scores near 0 and 1 and the loss then sees them saturated.
    scores = layers.Dense(config.n_tags, activation="sigmoid", dtype="float32", name="backend_scores")(
        x
    )  # (batch, n_tags)
    return {"pooled": pooled, "embedding": embedding, "scores": scores}


# -----------------------------------------------------------------------------
# the model


# The layers of each front-end that model.features.FRONTENDS names (the one list of their names).
FRONTEND_LAYERS = {"waveform": waveform_frontend, "spectrogram": spectrogram_frontend}


def check_frontend(frontend: str) -> None:
    """ValueError unless ``frontend`` is one of :data:`model.features.FRONTENDS`."""
    if frontend not in features.FRONTENDS:
        raise ValueError(f"unknown frontend {frontend!r}; choose one of {sorted(features.FRONTENDS)}")


def input_shape(frontend: str, config: NetworkConfig) -> tuple[int, ...]:
    """Shape of one example for ``frontend``, without the batch axis."""
    check_frontend(frontend)
    return (config.n_samples,) if frontend == "waveform" else (config.n_frames, config.n_mels)


def build_model(
    frontend: str, n_tags: int, preset: str = PAPER_PRESET, *, stages: bool = False, **overrides
) -> keras.Model:
    """One front-end joined to the shared back-end.

    Parameters
    ----------
    frontend : {"waveform", "spectrogram"}
        ``waveform`` takes (batch, n_samples) raw 16 kHz patches; ``spectrogram`` takes
        (batch, n_frames, n_mels) log-mel patches (:func:`model.dsp.log_mel_patches`).
    n_tags : int
        Number of sigmoid outputs.
    preset : {"pons2018", "musicnn"}
        Or an old name of :data:`PRESET_ALIASES`.
    stages : bool
        Also output ``frontend`` and ``pooled`` (the intermediate stages), for inspection.
    **overrides
        Any :class:`NetworkConfig` field.

    Returns
    -------
    keras.Model
        Outputs a dict ``{"scores": (batch, n_tags), "embedding": (batch, dense_units)}``.
    """
    check_frontend(frontend)
    config = make_config(n_tags, preset, **overrides)
    inputs = keras.Input(input_shape(frontend, config), name=frontend)
    frontend_out = FRONTEND_LAYERS[frontend](inputs, config)  # (batch, time, channels)
    outputs = backend(frontend_out, config)
    wanted = {"scores": outputs["scores"], "embedding": outputs["embedding"]}
    if stages:
        wanted.update(frontend=frontend_out, pooled=outputs["pooled"])
    return keras.Model(inputs, wanted, name=f"{frontend}_{PRESET_ALIASES.get(preset, preset)}")
