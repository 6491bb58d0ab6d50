"""What the weight remedies see of a tf-keras layer: its kernels, per-channel int8 grid, and the
linear part of its output (without bias and activation) for any kernels.

The grid is the converter's: symmetric int8 per output channel, step max|w| / 127, values in
[-127, 127] (TFLite and edgec's TensorRT Q/DQ quantizer both quantize weights this way). A
BatchNormalization after the layer multiplies each output channel by a positive-or-negative
factor the converter folds in: the per-channel grid of the folded kernel is the grid of the raw
kernel times that factor, so the rounding of each weight is the same either way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: layer classes whose kernels the remedies read and write
WEIGHTED = ("Conv2D", "Dense", "DepthwiseConv2D", "SeparableConv2D")
QMAX = 127


def kind(layer) -> str | None:
    name = type(layer).__name__
    return name if name in WEIGHTED else None


def weights(layer) -> dict[str, np.ndarray]:
    """The layer's weights by short name (kernel, depthwise_kernel, pointwise_kernel, bias, ...)."""
    return {w.name.split("/")[-1].split(":")[0]: np.array(v) for w, v in zip(layer.weights, layer.get_weights(),
                                                                               strict=True)}


def kernel_names(layer) -> list[str]:
    """The kernels whose int8 rounding matters, in the order :func:`linear` takes them."""
    k = kind(layer)
    if k == "SeparableConv2D":
        return ["depthwise_kernel", "pointwise_kernel"]
    if k == "DepthwiseConv2D":
        return ["depthwise_kernel"]
    return ["kernel"]


def channel_view(kernel: np.ndarray, name: str) -> np.ndarray:
    """The kernel as (..., output channels): depthwise kernels (h, w, in, mult) -> (h, w, in*mult)."""
    if name == "depthwise_kernel":
        h, w, c, m = kernel.shape
        return kernel.reshape(h, w, c * m)
    return kernel


def step(kernel: np.ndarray, name: str) -> np.ndarray:
    """Per-output-channel int8 step of a kernel, shaped to broadcast against it."""
    view = channel_view(kernel, name)
    s = np.abs(view).reshape(-1, view.shape[-1]).max(axis=0) / QMAX
    s = np.where(s > 0, s, 1.0)
    if name == "depthwise_kernel":
        return s.reshape(1, 1, kernel.shape[2], kernel.shape[3])
    return s.reshape((1,) * (kernel.ndim - 1) + (-1,))


def quantized(kernel: np.ndarray, name: str) -> np.ndarray:
    """The kernel at its int8 grid points (round to nearest), in float."""
    s = step(kernel, name)
    return np.clip(np.round(kernel / s), -QMAX, QMAX) * s


def linear(layer, x, kernels: list[Any]):
    """The layer's output on ``x`` with ``kernels`` (tensors or arrays), without bias or activation."""
    import tensorflow as tf

    cfg = layer.get_config()
    k = kind(layer)
    x = tf.convert_to_tensor(x, tf.float32)
    if k == "Dense":
        return tf.tensordot(x, kernels[0], axes=[[x.shape.rank - 1], [0]])
    strides = (1, *cfg["strides"], 1)
    padding = cfg["padding"].upper()
    dilations = tuple(cfg.get("dilation_rate", (1, 1)))
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise ValueError("channels_first")
    if k == "Conv2D":
        return tf.nn.conv2d(x, kernels[0], strides, padding, dilations=dilations)
    if k == "DepthwiseConv2D":
        return tf.nn.depthwise_conv2d(x, kernels[0], strides, padding, dilations=dilations)
    return tf.nn.separable_conv2d(x, kernels[0], kernels[1], strides, padding, dilations=dilations)


def supported(layer) -> bool:
    """A weighted layer the remedies can compute (channels-last, groups 1, 2-D)."""
    k = kind(layer)
    if k is None:
        return False
    cfg = layer.get_config()
    if cfg.get("data_format", "channels_last") != "channels_last" or cfg.get("groups", 1) != 1:
        return False
    if k != "Dense" and len(cfg.get("kernel_size", ())) != 2:
        return False
    return True


def layer_inputs(model, names: list[str], x: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    """The float model's input to each named layer on ``x``."""
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    if not names:
        return {}
    probe = keras.Model(model.inputs, [model.get_layer(n).input for n in names])
    outs = [[] for _ in names]
    for i in range(0, len(x), batch):
        got = probe(x[i:i + batch], training=False)
        got = got if isinstance(got, (list, tuple)) else [got]
        for k, g in enumerate(got):
            outs[k].append(np.asarray(g))
    return {n: np.concatenate(o) for n, o in zip(names, outs, strict=True)}
