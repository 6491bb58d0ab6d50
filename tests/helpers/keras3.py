"""Keras 3 test helpers: the scripts beside the keras3 tests, run in a child process in which
``import keras`` and ``tf.keras`` are Keras 3 (the test process pins tf-keras for TF-MOT)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "keras3"
CUSTOM_LAYERS = HERE / "custom_layers.py"


def make_models(out: Path, *extra: str) -> Path:
    """Keras 3 model files written into ``out`` by make_models.py (``extra``: its other arguments)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, str(HERE / "make_models.py"), str(out), *extra], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out
