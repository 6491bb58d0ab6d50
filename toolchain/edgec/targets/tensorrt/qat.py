"""TF-MOT quantization-aware training for TensorRT, and reading a QAT model back out.

TensorRT's INT8 is symmetric: activations int8 with zero point 0 and scale amax/127 (range
[-128, 127]), weights int8 in [-127, 127] with one scale per output channel. TF-MOT's default 8-bit
scheme (what TFLite runs) has asymmetric activations, and per-tensor Dense weights. The scheme here
keeps TF-MOT's default layout (Conv+BN+ReLU folding patterns, the same fake-quant positions) and
makes every activation quantizer symmetric and every Conv/Dense weight quantizer per-channel, so
the ranges learned in training are exactly the ones TensorRT uses: a symmetric 8-bit TF fake-quant
nudges its zero point to 128 of [0, 255], i.e. int8 zero point 0, with scale (max - min)/255.

Importing this module imports TensorFlow and TF-MOT; import it only when QAT is used.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np

from edgec.tfcompat import tf_and_keras

log = logging.getLogger(__name__)

tf, keras = tf_and_keras()

import tensorflow_model_optimization as tfmot  # noqa: E402  (needs tf-keras configured first)
from tensorflow_model_optimization.python.core.quantization.keras import (  # noqa: E402
    quantize_layer,
    quantize_wrapper,
    quantizers,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: E402
    default_8bit_quantize_registry,
)

from edgec.optimize.layout import LayoutTransform  # noqa: E402

QuantizeConfig = tfmot.quantization.keras.QuantizeConfig
_WEIGHTED = ("Conv2D", "DepthwiseConv2D", "Conv1D", "Conv2DTranspose", "Dense", "SeparableConv2D")


def _symmetric_activation(q):
    """The symmetric twin of an activation quantizer (zero point 0 in int8)."""
    if isinstance(q, (quantizers.MovingAverageQuantizer, quantizers.AllValuesQuantizer)) and not q.symmetric:
        return type(q)(num_bits=q.num_bits, per_axis=q.per_axis, symmetric=True, narrow_range=False)
    return q


def _per_channel_weight(q, layer):
    """Per-output-channel symmetric weights for Dense (TF-MOT's default is per-tensor there)."""
    if (type(layer).__name__ == "Dense" and isinstance(q, quantizers.LastValueQuantizer)
            and not q.per_axis):
        return quantizers.LastValueQuantizer(num_bits=q.num_bits, per_axis=True, symmetric=True, narrow_range=True)
    return q


@keras.utils.register_keras_serializable(package="edgec")
class TensorRTQuantizeConfig(QuantizeConfig):
    """Wraps a default-8-bit QuantizeConfig, making activations symmetric and weights per-channel."""

    def __init__(self, inner: QuantizeConfig):
        self.inner = inner

    def get_weights_and_quantizers(self, layer):
        return [(w, _per_channel_weight(q, layer)) for w, q in self.inner.get_weights_and_quantizers(layer)]

    def get_activations_and_quantizers(self, layer):
        return [(a, _symmetric_activation(q)) for a, q in self.inner.get_activations_and_quantizers(layer)]

    def set_quantize_weights(self, layer, quantize_weights):
        self.inner.set_quantize_weights(layer, quantize_weights)

    def set_quantize_activations(self, layer, quantize_activations):
        self.inner.set_quantize_activations(layer, quantize_activations)

    def get_output_quantizers(self, layer):
        return [_symmetric_activation(q) for q in self.inner.get_output_quantizers(layer)]

    def get_config(self):
        return {"inner": keras.utils.serialize_keras_object(self.inner)}

    @classmethod
    def from_config(cls, config):
        with tfmot.quantization.keras.quantize_scope():
            inner = keras.utils.deserialize_keras_object(config["inner"])
        return cls(inner)


def _wrap(config):
    if config is None or isinstance(config, TensorRTQuantizeConfig):
        return config
    return TensorRTQuantizeConfig(config)


class TensorRTQuantizeRegistry(default_8bit_quantize_registry.Default8BitQuantizeRegistry):
    """The default 8-bit registry with TensorRT's symmetric configs."""

    def get_quantize_config(self, layer):
        return _wrap(super().get_quantize_config(layer))


class TensorRTQuantizeLayoutTransform(LayoutTransform):
    """TF-MOT's default layout (Conv+BN+ReLU patterns; Conv/Dense before a ReLU layer keep their
    weight quantizer, see :mod:`edgec.optimize.layout`), then symmetric input and pattern configs."""

    def apply(self, model, layer_quantize_map):
        transformed, quantize_map = super().apply(model, layer_quantize_map)
        for layer in transformed.layers:
            if isinstance(layer, quantize_layer.QuantizeLayer) and layer.quantizer is not None:
                layer.quantizer = _symmetric_activation(layer.quantizer)  # read back by get_config on clone
        for entry in quantize_map.values():
            if entry.get("quantize_config") is not None:
                entry["quantize_config"] = _wrap(entry["quantize_config"])
        return transformed, quantize_map


class TensorRTQuantizeScheme(tfmot.quantization.keras.QuantizeScheme):
    """QAT scheme whose fake-quant matches TensorRT's explicit INT8 (see the module docstring)."""

    def get_layout_transformer(self):
        return TensorRTQuantizeLayoutTransform()

    def get_quantize_registry(self):
        return TensorRTQuantizeRegistry()


# --------------------------------------------------------------------------- reading a QAT model


_RANGE = re.compile(r"(?:^|/)(output|post_activation)_(min|max)(?::\d+)?$")


def _ranges(layer) -> tuple[float, float] | None:
    """The learned output range of a wrapper (output or post-activation quantizer) or a QuantizeLayer."""
    values: dict[str, dict[str, float]] = {}
    for var in layer.weights:
        name = var.name
        if isinstance(layer, quantize_layer.QuantizeLayer):
            m = re.search(r"_(min|max)(?::\d+)?$", name)
            key = ("input", m.group(1)) if m and "optimizer_step" not in name else None
        else:
            m = _RANGE.search(name)
            key = (m.group(1), m.group(2)) if m else None
        if key is not None:
            values.setdefault(key[0], {})[key[1]] = float(np.asarray(var.numpy()).reshape(-1)[0])
    for kind in ("output", "post_activation", "input"):
        pair = values.get(kind)
        if pair and "min" in pair and "max" in pair and pair["max"] > pair["min"]:
            return pair["min"], pair["max"]
    return None


def _plain_config(layer) -> dict[str, Any]:
    """A wrapped layer's config with its original activation (TF-MOT swaps in its own while wrapped)."""
    config = layer.get_config()
    act = getattr(layer, "activation", None)
    if act is not None and type(act).__name__ == "QuantizeAwareActivation":
        fn = act.activation
        config["activation"] = "linear" if type(fn).__name__ == "NoOpActivation" else keras.activations.serialize(fn)
    return config


def float_twin(model):
    """Strip fake-quant from a QAT model.

    Returns:
        ``(float_model, ranges)``: a plain tf-keras model with the QAT-trained weights (wrappers
        replaced by their inner layers, input quantizers by identity) and, by layer name of that
        model, the (min, max) range QAT learned for the layer's output.
    """
    ranges: dict[str, tuple[float, float]] = {}
    pairs: list[tuple[Any, Any]] = []

    def clone(layer):
        if isinstance(layer, quantize_wrapper.QuantizeWrapper):
            inner = layer.layer
            new = inner.__class__.from_config(_plain_config(inner))
            pairs.append((new, layer))  # the wrapper tracks the inner kernel; the inner layer may not
        elif isinstance(layer, quantize_layer.QuantizeLayer):
            new = keras.layers.Activation("linear", name=layer.name)
        else:
            new = layer.__class__.from_config(layer.get_config())
            pairs.append((new, layer))
        r = _ranges(layer)
        if r is not None:
            ranges[new.name] = r
        return new

    twin = keras.models.clone_model(model, clone_function=clone)
    for new, old in pairs:
        if not new.weights:
            continue
        source = {_short(v): v for v in old.weights}
        missing = [_short(w) for w in new.weights if _short(w) not in source]
        if missing:
            raise ValueError(f"layer '{new.name}': QAT wrapper has no weights {missing}")
        new.set_weights([source[_short(w)].numpy() for w in new.weights])
    return twin, ranges


def _short(var) -> str:
    """'quant_conv2d/conv2d/kernel:0' -> 'kernel' (quantizer variables are kernel_min, output_max...)."""
    return var.name.split("/")[-1].split(":")[0]


def symmetric_scale(lo: float, hi: float) -> tuple[float, bool]:
    """int8 scale of a TF fake-quant range and whether it runs with zero point 0.

    TF's 8-bit fake-quant uses scale (hi - lo)/255 and nudges its zero point to the nearest
    integer of -lo/scale in [0, 255]; a symmetric range learned by this scheme nudges to 128,
    which is int8 zero point 0 — exactly TensorRT's form. A range that nudges elsewhere (TF-MOT's
    default asymmetric scheme) is widened to its absolute maximum, as TensorRT would treat it.
    """
    scale = (hi - lo) / 255.0
    if scale > 0 and round(min(max(-lo / scale, 0.0), 255.0)) == 128:
        return float(scale), True
    return float(max(abs(lo), abs(hi)) / 127.0), False
