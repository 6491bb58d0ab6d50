"""BatchNormalization folding before clustering, and the QAT layout that keeps Conv/Dense weights
quantization-aware in front of a ReLU layer (TF-MOT's own layout drops their weight quantizer)."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.optimize import graph, qat


@pytest.fixture(scope="module")
def residual(arch_paths):
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    return keras.models.load_model(arch_paths["residual"], compile=False)


def test_fold_batchnorm_keeps_the_function_and_drops_the_layers(residual, arch_paths, digits_split):
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    folded, names = graph.fold_batchnorm(residual)
    assert len(names) == 5
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    assert len(folded.layers) == len(residual.layers) - 5
    x = digits_split.x_test[:64]
    np.testing.assert_allclose(folded(x, training=False).numpy(), residual(x, training=False).numpy(), atol=1e-4)
    first = next(layer.name for layer in residual.layers if isinstance(layer, keras.layers.Conv2D))
    assert folded.get_layer(first).use_bias and not residual.get_layer(first).use_bias
    separable = keras.models.load_model(arch_paths["separable"], compile=False)
    folded_sep, names_sep = graph.fold_batchnorm(separable)  # depthwise (in x multiplier) channels too
    assert any("depthwise" in layer.name for layer in folded_sep.layers) and len(names_sep) == 9
    np.testing.assert_allclose(folded_sep(x, training=False).numpy(), separable(x, training=False).numpy(),
                               atol=1e-4)


def test_fold_batchnorm_leaves_a_model_without_foldable_pairs(arch_paths):
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    cnn = keras.models.load_model(arch_paths["cnn"], compile=False)
    same, names = graph.fold_batchnorm(cnn)
    assert same is cnn and names == []


@pytest.mark.parametrize("pruned,clustered", [(False, False), (True, False), (False, True)])
def test_conv_before_relu_layer_keeps_its_weight_quantizer(residual, pruned, clustered):
    import tensorflow_model_optimization as tfmot

    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    folded, _ = graph.fold_batchnorm(residual)  # conv2d -> ReLU layer, no BatchNormalization between
    scheme, name, _ = qat.choose_scheme(None, pruned=pruned, clustered=clustered)
    q = qat._apply(graph.private_copy(folded), scheme, name, {}, keras, tfmot)  # noqa: SLF001
    convs = [layer.name for layer in folded.layers if isinstance(layer, keras.layers.Conv2D)]
    relus = [layer.name for layer in folded.layers if isinstance(layer, keras.layers.ReLU)]
    assert len(convs) == 6 and relus
    for conv in convs:  # three of them feed a ReLU layer directly
        weights = {v.name.split("/")[-1].split(":")[0] for v in q.get_layer(f"quant_{conv}").weights}
        assert {"kernel_min", "kernel_max"} <= weights, (conv, weights)
    assert "output_min" in {v.name.split("/")[-1].split(":")[0] for v in q.get_layer(f"quant_{relus[0]}").weights}
