"""Keras 3 layers traced for export in the form the TFLite converter keeps integer.

Keras 3's ``LayerNormalization`` ends in ``x * inv + (-mean * inv + beta)``. The TFLite converter
keeps that negation as a float NEG between DEQUANTIZE and QUANTIZE (it has no int8 rule for it),
so every int8 model with a Keras 3 LayerNormalization (ConvNeXt, transformer blocks) computes ops in
float and the Edge TPU and int8-only targets cannot run it. tf-keras' LayerNormalization
(``tf.nn.batch_normalization``) subtracts instead: ``x * inv + (beta - mean * inv)``, all integer.

During Keras 3's export each LayerNormalization is called through :func:`_layer_norm`, which
subtracts as tf-keras does. In IEEE arithmetic ``b + (-a) == b - a`` and ``(-m) * i == -(m * i)``
exactly, so the exported function computes the same float numbers as Keras 3's own call.
Keras 3's GroupNormalization is traced the same way, and its variance
as a mean of products (see :func:`_group_norm`).
(Exact GELU needs nothing: Keras 3 on TensorFlow calls ``tf.nn.gelu``, which the converter fuses
into LiteRT's GELU op, int8 included.)
"""

from __future__ import annotations

import contextlib
import functools


@contextlib.contextmanager
def integer_forms(model):
    """Within the block, ``model``'s LayerNormalization layers (nested ones too) compute
    ``beta - mean * inv`` rather than ``-mean * inv + beta``; the layers are put back afterwards."""
    from edgec.tfcompat import import_keras3

    keras = import_keras3()
    patched = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        # rms_scaling has no mean term; a subclass may compute something else in its own call
        if type(layer) is keras.layers.LayerNormalization and not getattr(layer, "rms_scaling", False):
            # an instance attribute shadows the class's method for this layer only
            patched.append((layer, "call", functools.partial(_layer_norm, layer)))
        elif type(layer) is keras.layers.GroupNormalization and hasattr(layer, "_apply_normalization"):
            patched.append((layer, "_apply_normalization", functools.partial(_group_norm, layer)))
    for layer, method, function in patched:
        layer.__dict__[method] = function
    try:
        yield [layer for layer, _, _ in patched]
    finally:
        for layer, method, _ in patched:
            layer.__dict__.pop(method, None)


def _layer_norm(layer, inputs, **_):
    """Keras 3's ``layer_normalization`` (keras.src.ops.nn) with the offset subtracted."""
    from edgec.tfcompat import import_keras3

    ops = import_keras3().ops
    dtype = layer.compute_dtype
    x = ops.cast(inputs, "float32" if dtype in ("float16", "bfloat16") else dtype)
    axes = sorted([layer.axis] if isinstance(layer.axis, int) else list(layer.axis))
    axes = [a % len(x.shape) for a in axes]
    shape = [1] * len(x.shape)
    for a in axes:
        shape[a] = x.shape[a]

    def broadcast(v):
        if v is None:
            return None
        v = ops.cast(v, x.dtype)
        return ops.reshape(v, shape) if len(v.shape) != len(shape) and axes != [len(shape) - 1] else v

    mean, variance = ops.moments(x, axes=axes, keepdims=True)
    inv = ops.rsqrt(variance + layer.epsilon)
    gamma, beta = broadcast(getattr(layer, "gamma", None)), broadcast(getattr(layer, "beta", None))
    if gamma is not None:
        inv = inv * gamma
    shift = mean * inv
    out = x * inv + (beta - shift) if beta is not None else x * inv - shift
    return ops.cast(out, dtype)


def _group_norm(layer, reshaped_inputs, input_shape):
    """Keras 3's ``GroupNormalization._apply_normalization`` with the offset subtracted, and the
    variance's square written as a product (``d * d == square(d)`` exactly): on the 5-D grouped
    tensor the converter splits ``SquaredDifference`` into SUB and a float SQUARE."""
    from edgec.tfcompat import import_keras3

    ops = import_keras3().ops
    dtype = reshaped_inputs.dtype
    x = ops.cast(reshaped_inputs, "float32" if dtype in ("float16", "bfloat16") else dtype)
    axes = list(range(1, len(x.shape)))
    axes.pop(-2 if layer.axis == -1 else layer.axis - 1)
    shape = layer._create_broadcast_shape(input_shape)
    mean = ops.mean(x, axis=axes, keepdims=True)
    centred = x - ops.stop_gradient(mean)
    variance = ops.mean(centred * centred, axis=axes, keepdims=True)
    inv = ops.rsqrt(variance + layer.epsilon)
    if layer.scale:
        inv = inv * ops.cast(ops.reshape(layer.gamma, shape), x.dtype)
    shift = mean * inv
    if layer.center:
        out = x * inv + (ops.cast(ops.reshape(layer.beta, shape), x.dtype) - shift)
    else:
        out = x * inv - shift
    return ops.cast(out, dtype)
