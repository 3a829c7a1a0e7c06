"""Floating-point operations a traced TensorFlow function executes, counted from its graph's shapes.

Counts the ops that carry the arithmetic of a CNN: MatMul, BatchMatMul, convolutions (2 per
multiply-add), and real FFTs (``2.5 N log2 N`` per transform of N points, the usual estimate for
a real-input FFT). Elementwise ops, reductions, pooling maxima and batch norms are not counted:
they are memory-bound and add about one FLOP per element. Every shape must be static (trace with a fixed batch size).
"""

from __future__ import annotations

import math

MATMULS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")
CONVS = ("Conv2D", "Conv1D", "Conv3D", "Conv", "DepthwiseConv2dNative")
FFTS = ("RFFT", "RFFT2D", "FFT", "IRFFT")


def _dims(tensor) -> list[int]:
    dims = tensor.shape.as_list()
    if any(d is None for d in dims):
        raise ValueError(f"{tensor.name} has an unknown dimension {dims}; trace with a fixed batch size")
    return dims


def op_flops(op) -> int:
    """FLOPs of one graph operation (0 for those not counted)."""
    kind = op.type
    if kind in MATMULS:
        a = _dims(op.inputs[0])
        swap_a = op.get_attr("transpose_a" if kind == "MatMul" else "adj_x")
        m, k = (a[-1], a[-2]) if swap_a else (a[-2], a[-1])
        n = _dims(op.outputs[0])[-1]
        batch = math.prod(_dims(op.outputs[0])[:-2])
        return 2 * batch * m * n * k
    if kind in CONVS:
        kernel, out = _dims(op.inputs[1]), _dims(op.outputs[0])
        if kind == "DepthwiseConv2dNative":
            return 2 * math.prod(out) * kernel[0] * kernel[1]
        return 2 * math.prod(out) * math.prod(kernel[:-1])  # each output: spatial taps x input channels
    if kind in FFTS:  # an RFFT's input is already framed to its fft_length here (tf.signal.stft)
        dims = _dims(op.inputs[0])
        points, transforms = dims[-1], math.prod(dims[:-1])
        factor = 2.5 if kind in ("RFFT", "IRFFT") else 5.0
        return int(factor * transforms * points * math.log2(points))
    return 0


def _graphs(graph):
    """The graph and the bodies of the functions it calls (tf.function nests them)."""
    yield graph
    for function in getattr(graph, "_functions", {}).values():
        body = getattr(function, "graph", None)
        if body is not None:
            yield from _graphs(body)


def count_flops(concrete_function) -> dict[str, int]:
    """FLOPs by op type of a concrete function (``tf.function(...).get_concrete_function(spec)``)."""
    totals: dict[str, int] = {}
    for graph in _graphs(concrete_function.graph):
        for op in graph.get_operations():
            flops = op_flops(op)
            if flops:
                totals[op.type] = totals.get(op.type, 0) + flops
    return totals


def total_flops(concrete_function) -> int:
    return sum(count_flops(concrete_function).values())
