"""Keras 3 layers traced for export in the form the TFLite converter keeps integer.

Keras 3's ``LayerNormalization`` ends in ``x * inv + (-mean * inv + beta)``. The TFLite converter
keeps that negation as a float NEG between DEQUANTIZE and QUANTIZE (it has no int8 rule for it),
so every int8 model with a Keras 3 LayerNormalization (ConvNeXt, transformer blocks) computes ops in
float and the Edge TPU and int8-only targets cannot run it. tf-keras' LayerNormalization
(``tf.nn.batch_normalization``) subtracts instead: ``x * inv + (beta - mean * inv)``, all integer.

During Keras 3's export each LayerNormalization is called through :func:`_layer_norm`, which
subtracts as tf-keras does. In IEEE arithmetic ``b + (-a) == b - a`` and ``(-m) * i == -(m * i)``
exactly, so the exported function computes the same float numbers as Keras 3's own call.
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
    from edgec.keras3 import import_keras3

    keras = import_keras3()
    patched = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        # rms_scaling has no mean term; a subclass may compute something else in its own call
        if type(layer) is keras.layers.LayerNormalization and not getattr(layer, "rms_scaling", False):
            # an instance attribute shadows the class's call for this layer only
            layer.__dict__["call"] = functools.partial(_layer_norm, layer)
            patched.append(layer)
    try:
        yield patched
    finally:
        for layer in patched:
            layer.__dict__.pop("call", None)


def _layer_norm(layer, inputs, **_):
    """Keras 3's ``layer_normalization`` (keras.src.ops.nn) with the offset subtracted."""
    from edgec.keras3 import import_keras3

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
