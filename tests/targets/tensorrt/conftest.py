"""Fixtures for the TensorRT target: trained digits models of each reference architecture."""

from __future__ import annotations

import pytest


class _TrainedOnFirstUse(dict):
    """arch -> trained model, training an architecture the first time a test asks for it."""

    def __init__(self, cnn, split):
        super().__init__(cnn=cnn)
        self.split = split

    def __missing__(self, arch: str):
        from edgec.examples import make_model, train

        model = make_model(arch)
        acc = train(model, self.split, epochs=15, seed=0)
        assert acc > 0.85, f"{arch} trained to only {acc:.3f}"
        self[arch] = model
        return model


@pytest.fixture(scope="session")
def trained_models(digits_split, digits_dir):
    """arch -> trained tf-keras model (the CNN is the shared session one; the others train briefly,
    each the first time a test uses it)."""
    from edgec.model_io import load_model

    return _TrainedOnFirstUse(load_model(digits_dir / "digits_cnn.keras").model, digits_split)

