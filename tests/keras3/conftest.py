"""Keras 3 model files, written once per session by a child process in which ``import keras`` and
``tf.keras`` are Keras 3 (this process pins tf-keras as ``tf.keras`` for TF-MOT)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.keras3 import make_models


@pytest.fixture(scope="session")
def keras3_dir(tmp_path_factory) -> Path:
    """functional.keras/.h5 (BatchNormalization, a residual Add), sequential.keras, custom.keras (a
    registered custom layer with a tf-keras twin), keras3_only.keras (one without) and data.npz."""
    return make_models(tmp_path_factory.mktemp("keras3"))


@pytest.fixture(scope="session")
def keras3_apps_dir(tmp_path_factory) -> Path:
    """Keras 3 Applications at 32x32 with random weights, and data32.npz (pixels 0..255)."""
    return make_models(tmp_path_factory.mktemp("keras3_apps"), "apps")
