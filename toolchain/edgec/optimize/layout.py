"""TF-MOT's default 8-bit layout, with Conv/Dense weights kept quantization-aware before a ReLU layer.

TF-MOT's ``LayerReLUQuantize`` transform, written for Add -> ReLU, also matches Conv2D,
DepthwiseConv2D and Dense followed by a ReLU layer and gives the producer a no-op quantize config:
its kernel then trains without fake-quant and, with the collaborative schemes, without the
zeros and shared values being preserved (the converter still quantizes it, after the fact).
Here Add -> ReLU keeps that transform; Conv/Dense -> ReLU is handled as TF-MOT handles
Conv -> BatchNorm -> ReLU: no fake-quant between the two layers, and the layer's own quantize
config (weights, pruning- or cluster-preserving) stays.

Importing this module imports TF-MOT; import it only when QAT is used.
"""

from __future__ import annotations

from tensorflow_model_optimization.python.core.quantization.keras import quantize_aware_activation
from tensorflow_model_optimization.python.core.quantization.keras import utils as quantize_utils
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_layout_transform as default_layout,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_transforms as t,
)
from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (
    model_transformer,
    transforms,
)

LayerPattern = transforms.LayerPattern
_WEIGHTED = "Conv2D|DepthwiseConv2D|Dense"


class AddReLUQuantize(t.LayerReLUQuantize):
    """Add -> ReLU: no fake-quant between them (TF-MOT's transform, for Add only)."""

    def pattern(self):
        return LayerPattern("ReLU", inputs=[LayerPattern("Add")])


class AddReluActivationQuantize(t.LayerReLUQuantize):
    """Add -> Activation('relu'): no fake-quant between them."""

    def pattern(self):
        return LayerPattern("Activation", config={"activation": "relu"}, inputs=[LayerPattern("Add")])


class WeightedReLUQuantize(transforms.Transform):
    """Conv/Dense -> ReLU: no fake-quant on the layer's output; its weights stay quantization-aware."""

    def pattern(self):
        return LayerPattern("ReLU", inputs=[LayerPattern(_WEIGHTED, config={"activation": "linear"})])

    def replacement(self, match_layer):
        producer = match_layer.input_layers[0]
        if match_layer.metadata.get("quantize_config") or producer.metadata.get("quantize_config"):
            return match_layer  # the user's own quantize configs win
        producer.layer["config"]["activation"] = quantize_utils.serialize_activation(
            quantize_aware_activation.NoOpActivation(), use_legacy_format=True)
        return match_layer

    def custom_objects(self):
        return {"NoOpActivation": quantize_aware_activation.NoOpActivation}


class WeightedReluActivationQuantize(WeightedReLUQuantize):
    """Conv/Dense -> Activation('relu'), as :class:`WeightedReLUQuantize`."""

    def pattern(self):
        return LayerPattern("Activation", config={"activation": "relu"},
                            inputs=[LayerPattern(_WEIGHTED, config={"activation": "linear"})])


class LayoutTransform(default_layout.Default8BitQuantizeLayoutTransform):
    """TF-MOT 0.8's default transforms, in its order, with the ReLU ones above."""

    def apply(self, model, layer_quantize_map):
        steps = [
            t.InputLayerQuantize(),
            t.SeparableConv1DQuantize(),
            t.SeparableConvQuantize(),
            t.Conv2DReshapeBatchNormReLUQuantize(),
            t.Conv2DReshapeBatchNormActivationQuantize(),
            t.Conv2DBatchNormReLUQuantize(),
            t.Conv2DBatchNormActivationQuantize(),
            t.Conv2DReshapeBatchNormQuantize(),
            t.Conv2DBatchNormQuantize(),
            t.ConcatTransform6Inputs(),
            t.ConcatTransform5Inputs(),
            t.ConcatTransform4Inputs(),
            t.ConcatTransform3Inputs(),
            t.ConcatTransform(),
            t.DenseBatchNormQuantize(),
            t.DenseBatchNormReLUQuantize(),
            t.DenseBatchNormActivationQuantize(),
            WeightedReLUQuantize(),
            WeightedReluActivationQuantize(),
            AddReLUQuantize(),
            AddReluActivationQuantize(),
        ]
        return model_transformer.ModelTransformer(model, steps, set(layer_quantize_map), layer_quantize_map).transform()


def with_layout(scheme_class):
    """A subclass of ``scheme_class`` (a default-8-bit QuantizeScheme) using :class:`LayoutTransform`."""

    class Scheme(scheme_class):
        def get_layout_transformer(self):
            return LayoutTransform()

    Scheme.__name__ = Scheme.__qualname__ = scheme_class.__name__
    return Scheme
