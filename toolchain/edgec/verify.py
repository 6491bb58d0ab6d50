"""Verify an artifact against the float model on the eval set, every output paired by name.

Each output gets the metrics that fit it: top-1 agreement where it is a distribution (or the
labelled classification output), relative max/mean absolute error and SQNR (dB) for every
output, and accuracy for the output the labels belong to (``--eval-output``, by default the single
classification-shaped output). Budgets apply to the labelled output.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from edgec.calibration import Dataset, count, take
from edgec.errors import EdgecError
from edgec.model_io import OutputSpec, output_specs, predict

Predict = Callable[[np.ndarray], list[np.ndarray]]
BATCH = 64


def run_batched(predict_fn: Predict, x, batch_size: int = BATCH, task=None) -> list[np.ndarray]:
    """Run ``predict_fn`` over ``x`` (an array, or a dict of arrays keyed by input name) in
    batches; its outputs concatenated, in its own order."""
    chunks: list[list[np.ndarray]] = []
    n = count(x)
    for start in range(0, n, batch_size):
        chunks.append(predict_fn(take(x, slice(start, start + batch_size))))
        if task is not None:
            task.advance(min(batch_size, n - start))
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def keras_predict(model) -> Predict:
    """The float reference: a Keras or signature model in inference mode, outputs in output order."""
    return lambda x: predict(model, x)


def is_distribution(out: np.ndarray) -> bool:
    """Rows of non-negative values summing to 1 (softmax-like), over the last axis."""
    if out.ndim < 2 or out.shape[-1] < 2 or out.size == 0:
        return False
    return bool(out.min() >= -1e-6 and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3))


def classification_shaped(shape: tuple) -> bool:
    return len(shape) == 1 and shape[0] is not None and shape[0] > 1


@dataclasses.dataclass
class Reference:
    """The float model's outputs on the eval data, computed once per build, and which output the
    labels belong to."""

    data: Dataset
    outputs: list[OutputSpec]
    values: list[np.ndarray]  # in output order
    labelled: int | None  # index into ``outputs`` of the labelled output
    float_accuracy: float | None

    @property
    def labelled_name(self) -> str | None:
        return self.outputs[self.labelled].name if self.labelled is not None else None


def reference(model, data: Dataset, eval_output: str | None = None, progress=None) -> Reference:
    """Run the float model on ``data`` and decide which output the labels belong to.

    Raises:
        EdgecError: ``eval_output`` names no output or a non-classification one; labelled data for
            a model with several candidate outputs and no ``eval_output``; labels outside the
            classes of the labelled output.
    """
    from edgec.progress import Progress

    progress = progress or Progress(enabled=False)
    specs = output_specs(model)
    names = [o.name for o in specs]
    with progress.task("verify: float model", total=len(data)) as task:
        values = run_batched(keras_predict(model), data.x, BATCH, task)
    for spec, value in zip(specs, values, strict=True):
        rows = ~np.isfinite(value.reshape(len(value), -1)).all(axis=1) if value.dtype.kind in "fc" else None
        if rows is not None and rows.any():
            raise EdgecError(f"the float model's output '{spec.name}' is NaN or infinite on {int(rows.sum())} of "
                             f"{len(rows)} samples of '{data.source}' (first: sample {int(np.argmax(rows))}); "
                             "verification needs finite reference outputs")
    labelled = None
    if eval_output is not None:
        if eval_output not in names:
            raise EdgecError(f"--eval-output '{eval_output}' is not an output of model '{model.name}'; its outputs: "
                             f"{', '.join(names)}")
        labelled = names.index(eval_output)
        if not classification_shaped(specs[labelled].shape):
            raise EdgecError(f"--eval-output '{eval_output}' has shape {list(specs[labelled].shape)}; labels need a "
                             "(batch, classes) output")
    elif data.y is not None:
        shaped = [i for i, o in enumerate(specs) if classification_shaped(o.shape)]
        if len(specs) == 1:
            labelled = shaped[0] if shaped else None
        else:
            dists = [i for i in shaped if is_distribution(values[i])]
            if len(dists) == 1:
                labelled = dists[0]
            else:
                why = (f"{len(dists)} of them are class distributions ({', '.join(names[i] for i in dists)})" if dists
                       else "none of them is a class distribution (softmax)")
                raise EdgecError(f"model '{model.name}' has {len(specs)} outputs ({', '.join(names)}) and {why}; "
                                 f"say which one the labels of '{data.source}' belong to with --eval-output NAME")
    accuracy = None
    if labelled is not None and data.y is not None:
        classes = values[labelled].shape[-1]
        if data.y.min() < 0 or data.y.max() >= classes:
            raise EdgecError(f"labels of '{data.source}' range over {int(data.y.min())}..{int(data.y.max())}, but "
                             f"output '{names[labelled]}' has {classes} classes (0..{classes - 1})")
        accuracy = float((values[labelled].argmax(-1) == data.y).mean())
    return Reference(data, specs, values, labelled, accuracy)


def _top1(values: np.ndarray) -> np.ndarray:
    """argmax over the last axis; -1 (no class) where a row holds NaN or Inf, which argmax would
    otherwise turn into a class."""
    pred = values.argmax(-1)
    pred[~np.isfinite(values).all(-1)] = -1
    return pred


def output_metrics(ref: np.ndarray, got: np.ndarray, *, top1: bool) -> dict[str, Any]:
    """Differences of one artifact output from the float one (same shape)."""
    f, a = ref.astype(np.float64), got.astype(np.float64).reshape(ref.shape)
    diff = np.abs(a - f)
    peak, mean_ref, noise = float(np.abs(f).max(initial=0.0)), float(np.abs(f).mean()), float((diff ** 2).sum())
    metrics: dict[str, Any] = {
        "max_abs_diff": float(diff.max(initial=0.0)),
        "mean_abs_diff": float(diff.mean()),
        "relative_max_abs_error": float(diff.max(initial=0.0) / peak) if peak > 0 else None,
        "relative_mean_abs_error": float(diff.mean() / mean_ref) if mean_ref > 0 else None,
        # signal-to-quantization-noise ratio; an exact match has no noise and no finite SQNR
        "sqnr_db": round(10.0 * math.log10(float((f ** 2).sum()) / noise), 3) if noise > 0 and (f ** 2).sum() > 0 else None,
        "float_range": float(np.ptp(f)) if f.size else 0.0,
    }
    if top1:
        metrics["agreement"] = float((f.argmax(-1) == _top1(a)).mean())
    return metrics


def compare(ref: Reference, art_outs: list[np.ndarray], art_names: list[str]) -> dict[str, Any]:
    """Every artifact output paired by name with the float one, and the labelled output's accuracy.

    Args:
        ref: from :func:`reference`.
        art_outs: the artifact's outputs on ``ref.data.x``, in the artifact's order.
        art_names: the artifact's output names, in the same order.

    Raises:
        EdgecError: the artifact lacks an output of the model.
    """
    missing = [o.name for o in ref.outputs if o.name not in art_names]
    if missing or len(art_names) != len(art_outs):
        raise EdgecError(f"the artifact's outputs ({', '.join(art_names)}) do not include the model's "
                         f"{', '.join(missing)}")
    outputs = []
    for i, spec in enumerate(ref.outputs):
        index = art_names.index(spec.name)
        labelled = i == ref.labelled
        entry = {"name": spec.name, "index": index, "shape": list(spec.shape), "labelled": labelled,
                 "distribution": is_distribution(ref.values[i])}
        top1 = entry["distribution"] or labelled
        got = np.asarray(art_outs[index])
        bad = int((~np.isfinite(got.reshape(len(got), -1)).all(axis=1)).sum()) if got.dtype.kind in "fc" else 0
        entry.update(output_metrics(ref.values[i], got, top1=top1))
        if bad:  # a NaN never agrees, never scores, and the metrics say so rather than hide it
            entry["non_finite_samples"] = bad
        if labelled and ref.data.y is not None:
            got = _top1(art_outs[index].reshape(ref.values[i].shape).astype(np.float64))
            entry["float_accuracy"] = ref.float_accuracy
            entry["artifact_accuracy"] = float((got == ref.data.y).mean())
            entry["accuracy_drop_points"] = round((ref.float_accuracy - entry["artifact_accuracy"]) * 100.0, 4)
        outputs.append(entry)
    result: dict[str, Any] = {
        "samples": len(ref.data),
        "data": ref.data.source,
        "labelled": ref.data.y is not None,
        "eval_output": ref.labelled_name,
        "max_abs_diff": max(o["max_abs_diff"] for o in outputs),
        "mean_abs_diff": float(np.mean([o["mean_abs_diff"] for o in outputs])),
        "reordered_outputs": [o["name"] for i, o in enumerate(outputs) if o["index"] != i],
        "non_finite_outputs": [o["name"] for o in outputs if o.get("non_finite_samples")],
        "outputs": outputs,
    }
    main = outputs[ref.labelled] if ref.labelled is not None else \
        (outputs[0] if len(outputs) == 1 and "agreement" in outputs[0] else None)
    if main is not None:
        for key in ("agreement", "float_accuracy", "artifact_accuracy", "accuracy_drop_points"):
            if key in main:
                result[key] = main[key]
    return result
