"""Keras 3 model files, written once per session by a child process in which ``import keras`` and
``tf.keras`` are Keras 3 (this process pins tf-keras as ``tf.keras`` for TF-MOT)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CUSTOM_LAYERS = HERE / "custom_layers.py"


def make_models(out: Path, *extra: str) -> Path:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, str(HERE / "make_models.py"), str(out), *extra], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture(scope="session")
def keras3_dir(tmp_path_factory) -> Path:
    """functional.keras/.h5 (BatchNormalization, a residual Add), sequential.keras, custom.keras (a
    registered custom layer with a tf-keras twin), keras3_only.keras (one without) and data.npz."""
    return make_models(tmp_path_factory.mktemp("keras3"))


@pytest.fixture(scope="session")
def keras3_apps_dir(tmp_path_factory) -> Path:
    """Keras 3 Applications at 32x32 with random weights, and data32.npz (pixels 0..255)."""
    return make_models(tmp_path_factory.mktemp("keras3_apps"), "apps")
