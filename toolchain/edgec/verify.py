"""Verify an artifact against the float Keras model on the eval set."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Predict = Callable[[np.ndarray], list[np.ndarray]]


def keras_predict(model, batch_size: int = 64) -> Predict:
    """Float reference: the Keras model in inference mode, outputs as a list."""

    def predict(x: np.ndarray) -> list[np.ndarray]:
        outs = model(x, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return [np.asarray(o, dtype=np.float32) for o in outs]

    return predict


def run_batched(predict: Predict, x: np.ndarray, batch_size: int, task=None) -> list[np.ndarray]:
    chunks: list[list[np.ndarray]] = []
    for start in range(0, len(x), batch_size):
        chunks.append(predict(x[start:start + batch_size]))
        if task is not None:
            task.advance(min(batch_size, len(x) - start))
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def _is_classification(out: np.ndarray) -> bool:
    return out.ndim == 2 and out.shape[1] > 1


def compare(float_outs: list[np.ndarray], art_outs: list[np.ndarray], y: np.ndarray | None) -> dict[str, Any]:
    """Accuracy, agreement and output differences of an artifact against the float model."""
    ref, got = float_outs[0], art_outs[0]
    diffs = [np.abs(f.astype(np.float64) - a.astype(np.float64).reshape(f.shape))
             for f, a in zip(float_outs, art_outs, strict=True)]
    result: dict[str, Any] = {
        "samples": int(len(ref)),
        "max_abs_diff": float(max(d.max() for d in diffs)),
        "mean_abs_diff": float(np.mean([d.mean() for d in diffs])),
        "float_output_range": float(np.ptp(ref)),
    }
    if _is_classification(ref):
        f_top, a_top = ref.argmax(1), got.reshape(ref.shape).argmax(1)
        result["agreement"] = float((f_top == a_top).mean())
        if y is not None:
            fa, aa = float((f_top == y).mean()), float((a_top == y).mean())
            result.update(float_accuracy=fa, artifact_accuracy=aa,
                          accuracy_drop_points=round((fa - aa) * 100.0, 4))
    return result


