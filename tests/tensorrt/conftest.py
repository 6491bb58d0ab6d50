"""Fixtures for the TensorRT target: trained digits models of each reference architecture."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def trained_models(digits_split, digits_dir):
    """arch -> trained tf-keras model (the CNN is the shared session one; the others train briefly)."""
    from edgec.examples import make_model, train
    from edgec.model_io import load_model

    models = {"cnn": load_model(digits_dir / "digits_cnn.keras").model}
    for arch in ("residual", "separable"):
        model = make_model(arch)
        acc = train(model, digits_split, epochs=15, seed=0)
        assert acc > 0.85, f"{arch} trained to only {acc:.3f}"
        models[arch] = model
    return models


def accuracy(outputs: list[np.ndarray], y: np.ndarray) -> float:
    return float((outputs[0].argmax(1) == y).mean())
