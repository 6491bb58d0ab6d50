"""Edge TPU test helpers: verbatim compiler output, random calibration data, Keras MAC counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[1] / "targets" / "edgetpu" / "fixtures"


def fixture_text(name: str) -> str:
    """A verbatim copy of edgetpu_compiler output (see fixtures/README.md for its source)."""
    return (FIXTURES / name).read_text()


def random_npz(path: Path, shape, n: int = 32, seed: int = 0) -> Path:
    """A few dozen random inputs in [0, 1): enough to calibrate int8 ranges for these tests."""
    np.savez(path, x=np.random.default_rng(seed).random((n, *shape), dtype=np.float32))
    return path


def keras_macs(model) -> int:
    """Multiply-accumulates of Conv2D / DepthwiseConv2D / Dense layers, from Keras layer shapes."""
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            _, h, w, c = layer.output_shape
            total += h * w * c * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, c = layer.output_shape
            total += h * w * c * layer.kernel_size[0] * layer.kernel_size[1] * layer.input_shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += layer.units * layer.input_shape[-1]
    return total
