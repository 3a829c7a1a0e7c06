"""The roofline's FLOP counter (benchmarks/flops.py) against counts made by hand from the shapes."""

import math

import numpy as np
import tensorflow as tf

from benchmarks.flops import count_flops


def _concrete(fn, *shapes):
    return tf.function(fn).get_concrete_function(*(tf.TensorSpec(s, tf.float32) for s in shapes))


def test_a_timbral_conv_layer_counts_two_flops_per_multiply_add():
    import keras

    # musicnn's first timbral conv: 204 filters of 7 frames x 38 mel bands over a (187, 96, 1) patch
    conv = keras.layers.Conv2D(204, (7, 38), padding="valid")
    conv.build((None, 187, 96, 1))
    counted = count_flops(_concrete(conv, (2, 187, 96, 1)))
    outputs = 2 * (187 - 7 + 1) * (96 - 38 + 1) * 204  # batch x time x frequency x filters
    assert sum(counted.values()) == 2 * outputs * 7 * 38 * 1
    assert set(counted) <= {"Conv2D", "Conv"}


def test_matmuls_count_their_transposes_and_batches():
    a, b = (5, 3, 4), (5, 6, 4)  # batched, second operand transposed: 5 x (3 x 4) @ (4 x 6)
    counted = count_flops(_concrete(lambda x, y: tf.linalg.matmul(x, y, transpose_b=True), a, b))
    assert counted == {"BatchMatMulV2": 2 * 5 * 3 * 6 * 4}
    counted = count_flops(_concrete(lambda x, y: tf.linalg.matmul(x, y, transpose_a=True), (7, 3), (7, 2)))
    assert counted == {"MatMul": 2 * 3 * 2 * 7}


def test_an_rfft_counts_the_usual_estimate_and_elementwise_ops_count_nothing():
    def spectrum(x):
        return tf.abs(tf.signal.rfft(x)) * 2.0 + 1.0

    counted = count_flops(_concrete(spectrum, (10, 512)))
    assert counted == {"RFFT": int(2.5 * 10 * 512 * math.log2(512))}
    np.testing.assert_equal(sum(count_flops(_concrete(lambda x: tf.nn.relu(x) + x, (4, 4))).values()), 0)
