"""Cross-layer equalization (Nagel et al., data-free quantization): rescale the output channels of
one layer and the matching input channels of the next so that both have the same weight range.

For a positive factor ``s`` per channel, ``f(W1 x / s) * s`` computes the same as ``f(W1 x)`` when
``f`` is positively homogeneous (ReLU, leaky ReLU, linear), and so do zero padding, max and average
pooling between the pair. Pairs found:

* Conv2D / Dense / DepthwiseConv2D / SeparableConv2D -> [BatchNormalization] -> [activation,
  pooling, padding, dropout] -> Conv2D / Dense / DepthwiseConv2D / SeparableConv2D, each link with
  one consumer. A BatchNormalization after the first layer is scaled instead of it (gamma and beta
  divided by ``s``), its folded kernel's range counted;
* inside every SeparableConv2D (and DepthwiseConv2D -> 1x1 Conv2D, which the first rule covers):
  the depthwise output channel and the pointwise input channel.

ReLU6 (``ReLU(max_value=6)``, ``Activation('relu6')``) clips at 6: after scaling a channel by
``1/s`` its clip must be at ``6/s``. The clip bound is converted: that layer becomes a ReLU
followed by a per-channel minimum (``6/s`` for each channel), exactly the same function; LiteRT
runs it as RELU + MINIMUM (both int8). A ReLU6 fused into a layer (``activation='relu6'``) is not
converted and its pair is left as it is.

The result is checked against the original on the calibration data (max abs difference reported).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgec.accuracy.remedies import layers as L

log = logging.getLogger(__name__)

PASSES = 4
PASSTHROUGH = ("ZeroPadding2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
               "GlobalMaxPooling2D", "Dropout", "SpatialDropout2D")
HOMOGENEOUS_ACTIVATIONS = ("relu", "linear", None)


def _consumer(layer):
    """The one layer consuming ``layer``'s one output, or None."""
    nodes = layer._outbound_nodes  # noqa: SLF001 (tf-keras keeps the graph there)
    if len(layer._inbound_nodes) != 1 or len(nodes) != 1:  # noqa: SLF001
        return None
    nxt = nodes[0].outbound_layer
    inbound = nxt._inbound_nodes  # noqa: SLF001
    if len(inbound) != 1 or len(inbound[0].inbound_layers if isinstance(inbound[0].inbound_layers, list)
                                 else [inbound[0].inbound_layers]) != 1:
        return None
    return nxt


def _relu6(layer) -> bool:
    name = type(layer).__name__
    cfg = layer.get_config()
    if name == "ReLU":
        return cfg.get("max_value") is not None and float(cfg["max_value"]) == 6.0 and \
            not cfg.get("negative_slope") and not cfg.get("threshold")
    return name == "Activation" and cfg.get("activation") == "relu6"


def _homogeneous(layer) -> bool:
    name = type(layer).__name__
    cfg = layer.get_config()
    if name == "ReLU":
        return cfg.get("max_value") is None and not cfg.get("threshold")
    if name == "LeakyReLU":
        return True
    if name == "Activation":
        return cfg.get("activation") in ("relu", "linear")
    return name in PASSTHROUGH


def find_pairs(model) -> list[dict[str, Any]]:
    """The equalizable pairs: ``{"first", "bn", "clip", "second"}`` layer names (bn, clip: or None)."""
    pairs = []
    for layer in model.layers:
        if not L.supported(layer) or layer.get_config().get("activation", "linear") not in ("relu", "linear"):
            continue
        bn = clip = None
        nxt = _consumer(layer)
        if nxt is not None and type(nxt).__name__ == "BatchNormalization":
            cfg = nxt.get_config()
            axis = cfg["axis"][0] if isinstance(cfg["axis"], list) else cfg["axis"]
            if layer.get_config().get("activation", "linear") != "linear" or not (cfg["scale"] and cfg["center"]) \
                    or axis not in (-1, len(nxt.input_shape) - 1):
                continue
            bn, nxt = nxt.name, _consumer(nxt)
        while nxt is not None and not L.supported(nxt):
            if _relu6(nxt) and clip is None:
                clip = nxt.name
            elif not _homogeneous(nxt):
                nxt = None
                break
            nxt = _consumer(nxt)
        if nxt is None or not L.supported(nxt):
            continue
        pairs.append({"first": layer.name, "bn": bn, "clip": clip, "second": nxt.name})
    return pairs


class _State:
    """The weights being equalized (numpy copies) and each converted clip's per-channel bound."""

    def __init__(self, model):
        self.model = model
        self.w: dict[str, dict[str, np.ndarray]] = {}
        self.clips: dict[str, np.ndarray] = {}

    def get(self, name: str) -> dict[str, np.ndarray]:
        if name not in self.w:
            self.w[name] = {k: v.astype(np.float64) for k, v in L.weights(self.model.get_layer(name)).items()}
        return self.w[name]


def _out_range(state: _State, pair) -> np.ndarray:
    layer = state.model.get_layer(pair["first"])
    w = state.get(pair["first"])
    name = "pointwise_kernel" if L.kind(layer) == "SeparableConv2D" else L.kernel_names(layer)[0]
    view = L.channel_view(w[name], name)
    r = np.abs(view).reshape(-1, view.shape[-1]).max(axis=0)
    if pair["bn"]:
        bn = state.get(pair["bn"])
        eps = state.model.get_layer(pair["bn"]).epsilon
        r = r * np.abs(bn["gamma"]) / np.sqrt(bn["moving_variance"] + eps)
    return r


def _in_range(state: _State, name: str) -> np.ndarray:
    layer = state.model.get_layer(name)
    w = state.get(name)
    k = L.kind(layer)
    if k == "Dense":
        return np.abs(w["kernel"]).max(axis=1)
    if k == "Conv2D":
        return np.abs(w["kernel"]).max(axis=(0, 1, 3))
    return np.abs(w["depthwise_kernel"]).max(axis=(0, 1, 3))  # depthwise, separable: its depthwise part


def _scale_out(state: _State, pair, s: np.ndarray) -> None:
    """Divide the first layer's output channel c by s[c] (through its BatchNormalization)."""
    if pair["bn"]:
        bn = state.get(pair["bn"])
        bn["gamma"] = bn["gamma"] / s
        bn["beta"] = bn["beta"] / s
    else:
        layer = state.model.get_layer(pair["first"])
        w = state.get(pair["first"])
        k = L.kind(layer)
        if k == "SeparableConv2D":
            w["pointwise_kernel"] = w["pointwise_kernel"] / s
        elif k == "DepthwiseConv2D":
            dk = w["depthwise_kernel"]
            w["depthwise_kernel"] = dk / s.reshape(1, 1, dk.shape[2], dk.shape[3])
        else:
            w["kernel"] = w["kernel"] / s
        if "bias" in w:
            w["bias"] = w["bias"] / s
    if pair["clip"]:
        state.clips[pair["clip"]] = state.clips.get(pair["clip"], np.full(len(s), 6.0)) / s


def _scale_in(state: _State, name: str, s: np.ndarray) -> None:
    """Multiply the second layer's input channel c by s[c]."""
    layer = state.model.get_layer(name)
    w = state.get(name)
    k = L.kind(layer)
    if k == "Dense":
        w["kernel"] = w["kernel"] * s[:, None]
    elif k == "Conv2D":
        w["kernel"] = w["kernel"] * s[None, None, :, None]
    else:
        w["depthwise_kernel"] = w["depthwise_kernel"] * s[None, None, :, None]


def _balance(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """s with r1 / s == r2 * s == sqrt(r1 r2); 1 where either range is 0."""
    ok = (r1 > 0) & (r2 > 0)
    s = np.ones_like(r1)
    s[ok] = np.sqrt(r1[ok] / r2[ok])
    return s


def _separable_inner(state: _State, name: str) -> None:
    w = state.get(name)
    dk, pk = w["depthwise_kernel"], w["pointwise_kernel"]
    r1 = np.abs(L.channel_view(dk, "depthwise_kernel")).reshape(-1, dk.shape[2] * dk.shape[3]).max(axis=0)
    r2 = np.abs(pk).max(axis=(0, 1, 3))
    s = _balance(r1, r2)
    w["depthwise_kernel"] = dk / s.reshape(1, 1, dk.shape[2], dk.shape[3])
    w["pointwise_kernel"] = pk * s[None, None, :, None]


def equalize(model, x: np.ndarray | None = None) -> tuple[Any, dict[str, Any]]:
    """A copy of ``model`` with cross-layer equalization applied, and what was done.

    Returns:
        ``(model, report)``: report has ``pairs`` (first -> second, through what),
        ``separable_layers``, ``clips_converted`` and ``max_abs_diff`` (the new model against the
        old on ``x``, when given).
    """
    from edgec.optimize.graph import rebuild
    from edgec.tfcompat import tf_and_keras

    tf, keras = tf_and_keras()
    if not getattr(model, "_is_graph_network", False):
        return model, {"pairs": [], "separable_layers": [], "clips_converted": [], "max_abs_diff": 0.0,
                       "note": "not a functional model: left as it is"}
    pairs = find_pairs(model)
    state = _State(model)
    separable = [layer.name for layer in model.layers if L.supported(layer) and L.kind(layer) == "SeparableConv2D"]
    for _ in range(PASSES):
        for name in separable:
            _separable_inner(state, name)
        for pair in pairs:
            s = _balance(_out_range(state, pair), _in_range(state, pair["second"]))
            _scale_out(state, pair, s)
            _scale_in(state, pair["second"], s)

    def replace(layer, args, kwargs):
        if layer.name in state.clips:
            bound = state.clips[layer.name].astype(np.float32)
            y = keras.layers.ReLU(name=layer.name)(*args, **kwargs)
            return keras.layers.Lambda(lambda t, b=bound: tf.minimum(t, b), name=f"{layer.name}_clip")(y)
        if layer.name not in state.w:
            return None
        clone = layer.__class__.from_config(layer.get_config())
        out = clone(*args, **kwargs)
        new = state.w[layer.name]
        clone.set_weights([new[k].astype(np.float32) for k in L.weights(layer)])
        return out

    out = rebuild(model, replace)
    report = {"pairs": [{"first": p["first"], "second": p["second"],
                         "through": [n for n in (p["bn"], p["clip"]) if n]} for p in pairs],
              "separable_layers": separable, "clips_converted": sorted(state.clips),
              "max_abs_diff": max_abs_diff(model, out, x) if x is not None else None}
    return out, report


def max_abs_diff(a, b, x) -> float:
    """Largest absolute difference of any output of two models on ``x``."""
    from edgec.model_io import predict

    return float(max(np.abs(p - q).max() for p, q in zip(predict(a, x), predict(b, x), strict=True)))
