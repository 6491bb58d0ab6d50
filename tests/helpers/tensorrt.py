"""TensorRT test helpers."""

from __future__ import annotations

import numpy as np


def accuracy(outputs: list[np.ndarray], y: np.ndarray) -> float:
    """Top-1 accuracy of the first output's logits against the labels ``y``."""
    return float((outputs[0].argmax(1) == y).mean())
