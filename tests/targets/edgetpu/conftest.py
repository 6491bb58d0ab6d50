"""Fixtures for the Edge TPU target: real int8 conversions of small models, real compiler text."""

from __future__ import annotations

from pathlib import Path

import pytest

import edgec
from tests.helpers.edgetpu import random_npz


@pytest.fixture(scope="session")
def coral_build(digits_dir, tmp_path_factory):
    """The digits CNN built for coral-usb (no edgetpu_compiler on this host), verified on eval."""
    return edgec.build(digits_dir / "digits_cnn.keras", target="coral-usb", calib=str(digits_dir / "calib.npz"),
                       eval=str(digits_dir / "eval.npz"), out=tmp_path_factory.mktemp("coral"))


@pytest.fixture(scope="session")
def mobilenet(tmp_path_factory):
    """keras.applications MobileNetV2 (weights=None, alpha 0.35, 96x96) built for coral-usb."""
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3))
    tmp = tmp_path_factory.mktemp("mnv2")
    calib = random_npz(tmp / "calib.npz", (96, 96, 3), n=32)
    result = edgec.build(model, target="coral-usb", calib=str(calib), out=tmp / "dist")
    return model, result


@pytest.fixture(scope="session")
def leaky_build(tmp_path_factory):
    """A small CNN with LEAKY_RELU (not an Edge TPU op) between two convolutions."""
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.LeakyReLU(0.1)(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(10)(x))
    tmp = tmp_path_factory.mktemp("leaky")
    calib = random_npz(tmp / "calib.npz", (8, 8, 1))
    return edgec.build(model, target="coral-usb", calib=str(calib), out=tmp / "dist")


@pytest.fixture(scope="session")
def fp32_digits(digits_dir, tmp_path_factory) -> Path:
    """The digits CNN as a float32 TFLite model with a dynamic batch (the TFLite target, x86-cpu)."""
    result = edgec.build(digits_dir / "digits_cnn.keras", target="x86-cpu", precision="fp32",
                         out=tmp_path_factory.mktemp("fp32"))
    return result.out_dir / "model.tflite"

