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
2. **Convolutions as blocked banded GEMMs.** A conv is a linear map, so a block of its outputs
   is one matrix product with a banded matrix built from the kernel. Blocks keep the zeros of the
   band few and each product small:

   - timbral (7 x F kernel over time x frequency): ``FREQUENCY_BLOCK`` output frequencies need
     ``FREQUENCY_BLOCK + F - 1`` bands of 7 frames, so the matrix is
     (block x filters, (block + F - 1) x 7) and the input is the 7 time-shifted copies of the
     patch, one row per (band, shift). The max over the block follows each product at once; the
     blocks overlap at the top rather than pad (a max does not mind a position seen twice).
     TF's Conv2D over one input channel runs at ~40-48 GFLOPS; these products at ~65.
   - temporal (L frames, one band): ``TIME_BLOCK`` output frames need ``TIME_BLOCK + L - 1``
     input frames; one (block x filters, block + L - 1) matrix per kernel multiplies every
     block of every band and patch, and the max over mel follows each product: half the
     multiply-adds of one (187 x 153, 187) matrix for all frames, 1.2x those of the direct convs.

The back-end is the Keras model's own layers, called as a sub-model. Outputs equal the Keras
model's to float32 rounding (tests/test_network.py measures it).
"""

from __future__ import annotations

import math

import numpy as np

# Output positions per banded block; measured best or near it at batch 16 (BENCHMARKS.md, profile).
FREQUENCY_BLOCK = 2
TIME_BLOCK = 16


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


def band_taps(block: int, length: int) -> np.ndarray:
    """(output position, input position) -> kernel tap ``input - output``, or ``length`` (a zero).

    A block of ``block`` outputs of a "valid" conv with a ``length``-tap kernel reads
    ``block + length - 1`` inputs.
    """
    tap = np.arange(block + length - 1)[None, :] - np.arange(block)[:, None]
    return np.where((tap >= 0) & (tap < length), tap, length).astype(np.int32)


def time_band_matrix(kernel, block: int):
    """(block x filters, block + length - 1) matrix M of a 1-channel conv over time.

    ``M @ frames[t0 : t0 + block + length - 1]`` is the "valid" conv's output frames
    ``t0 .. t0 + block - 1``, row ``t * filters + c`` for frame t of filter c.

    Parameters
    ----------
    kernel : tensor (length, filters)
    block : int
    """
    import tensorflow as tf

    length, filters = kernel.shape
    padded = tf.concat([kernel, tf.zeros([1, filters], kernel.dtype)], axis=0)  # zero row for no tap
    taps = tf.gather(padded, band_taps(block, length))  # (out, in, filters)
    return tf.reshape(tf.transpose(taps, [0, 2, 1]), [block * filters, -1])


def frequency_band_matrix(kernel, block: int):
    """(block x filters, (block + height - 1) x width) matrix of a (width, height) conv.

    ``width`` taps run over time, ``height`` over frequency. Column ``f * width + d`` multiplies
    band f of the input frame shifted by d; row ``j * filters + c`` is output frequency j of
    filter c ("valid" over frequency, block-relative).

    Parameters
    ----------
    kernel : tensor (width, height, filters)
    block : int
    """
    import tensorflow as tf

    width, height, filters = kernel.shape
    padded = tf.concat([kernel, tf.zeros([width, 1, filters], kernel.dtype)], axis=1)
    taps = tf.gather(padded, band_taps(block, height), axis=1)  # (width, out, in, filters)
    return tf.reshape(tf.transpose(taps, [1, 3, 2, 0]), [block * filters, -1])


def block_starts(n_out: int, block: int) -> list:
    """First positions of blocks covering ``n_out`` outputs; the last block overlaps its neighbour
    instead of running past the end (the max over positions is the same)."""
    starts = list(range(0, n_out - block + 1, block))
    if starts[-1] + block < n_out:
        starts.append(n_out - block)
    return starts


class FastSpectrogramModel:
    """Callable ``log_mel (batch, frames, mels) -> {"scores", "embedding"}`` with the Keras
    model's outputs, computed as described in the module docstring from the model's own variables.

    Parameters
    ----------
    keras_model : keras.Model
        A spectrogram model for which :func:`supports` is true.
    frequency_block, time_block : int
        Output positions per banded product (timbral, temporal); any value gives the same outputs.
    """

    def __init__(self, keras_model, frequency_block: int = FREQUENCY_BLOCK, time_block: int = TIME_BLOCK):
        import keras

        if not supports(keras_model):
            raise ValueError(f"{keras_model.name} is not a spectrogram model with max-after temporal pooling")
        get = keras_model.get_layer
        names = {layer.name for layer in keras_model.layers}
        self.frequency_block, self.time_block = frequency_block, time_block
        self.n_frames = int(get("mel_channel").output.shape[1])
        self.input_bn = _bn(get("input_bn")) if "input_bn" in names else None
        self.timbral = [
            (
                get(f"timbral_{i}_conv"),
                _bn(get(f"timbral_{i}_bn")),
                tuple(get(f"timbral_{i}_pad").padding[0]) if f"timbral_{i}_pad" in names else (0, 0),
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

    @staticmethod
    def shifted_bands(x, width: int, pad):
        """(batch, time, mel) -> (mel x width, batch x time'): row ``f * width + d`` holds band f
        of every frame shifted by d, after padding time by ``pad``; time' = time + sum(pad) - width + 1."""
        import tensorflow as tf

        padded = tf.pad(x, [[0, 0], list(pad), [0, 0]])
        n_out = int(padded.shape[1]) - width + 1
        shifts = tf.stack([padded[:, d : d + n_out, :] for d in range(width)], axis=0)  # (width, batch, time', mel)
        return tf.reshape(tf.transpose(shifts, [3, 0, 1, 2]), [int(x.shape[2]) * width, -1])

    def _timbral(self, rows, conv, bn, n_mels: int):
        """Shifted bands (mel x width, batch x time') -> (batch x time', filters) after ReLU and BN."""
        import tensorflow as tf

        sign = _sign([bn["scale"]])
        width, height, _, filters = conv.kernel.shape
        block = min(self.frequency_block, n_mels - height + 1)
        matrix = frequency_band_matrix(conv.kernel[:, :, 0, :] * sign, block)
        maxed = None
        for start in block_starts(n_mels - height + 1, block):
            z = tf.linalg.matmul(matrix, rows[start * width : (start + block + height - 1) * width])
            z = tf.reduce_max(tf.reshape(z, [block, filters, -1]), axis=0)  # (filters, batch x time')
            maxed = z if maxed is None else tf.maximum(maxed, z)
        maxed = tf.transpose(maxed) * sign  # max, or min where sign < 0
        return _apply_bn(tf.nn.relu(maxed + conv.bias), bn)

    def _temporal_conv(self, bands, kernel, sign, n_mels: int):
        """One "same" conv over time of (time, mel x batch) bands, then the max over mel.

        Returns (time, filters, batch), the sign already restored.
        """
        import tensorflow as tf

        length, filters = kernel.shape
        block, n_frames = self.time_block, self.n_frames
        n_blocks = math.ceil(n_frames / block)
        before = (length - 1) // 2  # TF's "same" puts the extra frame of an even kernel after
        padded = tf.pad(bands, [[before, n_blocks * block + length - 1 - before - n_frames], [0, 0]])
        blocks = tf.signal.frame(padded, block + length - 1, block, axis=0)  # (blocks, block + length - 1, mel x batch)
        matrix = time_band_matrix(kernel * sign, block)
        # One product per block, its max over mel at once: each (block x filters, mel x batch)
        # output stays in cache, where one product for all blocks wrote 11 MB per patch to memory
        # and read it back (half the time at batch 16, BENCHMARKS.md).
        maxed = [
            tf.reduce_max(tf.reshape(tf.linalg.matmul(matrix, blocks[i]), [block, filters, n_mels, -1]), axis=2)
            for i in range(n_blocks)
        ]
        z = tf.reshape(tf.stack(maxed), [n_blocks * block, filters, -1])[:n_frames]
        return z * sign[:, None]

    def _temporal(self, x):
        """(batch, time, mel) -> (batch, time, temporal filters) after ReLU and BN."""
        import tensorflow as tf

        # (time, mel x batch), batch innermost: the max over mel then reduces a middle axis with
        # the batch contiguous (measured faster than mel innermost), and only the maxed
        # (time, channels, batch) values are transposed.
        bands = tf.reshape(tf.transpose(x, [1, 2, 0]), [self.n_frames, -1])
        maxed = [  # kernels (L, 1, 1, F) -> (L, F)
            self._temporal_conv(bands, conv.kernel[:, 0, 0, :], _sign([bn["scale"]]), int(x.shape[2]))
            for conv, bn in self.temporal
        ]
        maxed = tf.transpose(tf.concat(maxed, axis=1), [2, 0, 1])  # (batch, time, channels)
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
        n_frames, n_mels = int(x.shape[1]), int(x.shape[2])  # the batch size may be unknown
        rows = {}  # the shifted bands, once per (width, padding)
        branches = []
        for conv, bn, pad in self.timbral:
            width = int(conv.kernel.shape[0])
            if (width, pad) not in rows:
                rows[width, pad] = self.shifted_bands(x, width, pad)
            timbral = self._timbral(rows[width, pad], conv, bn, n_mels)
            branches.append(tf.reshape(timbral, [-1, n_frames, timbral.shape[-1]]))
        return tf.concat(branches + [self._temporal(x)], axis=-1)

    def __call__(self, log_mel):
        outputs = self.backend(self.frontend(log_mel), training=False)
        return {"scores": outputs["scores"], "embedding": outputs["embedding"]}
