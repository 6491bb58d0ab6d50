"""Compression in the build: channels -> low-rank -> prune -> cluster -> QAT (each optional), with
distillation.

Channel pruning (:mod:`edgec.optimize.channels`) and low-rank factorization
(:mod:`edgec.optimize.lowrank`) rebuild the model with smaller layers, so they cut the work (MACs)
as well as the size; they run first, and the other steps act on the smaller model. The other
steps use TF-MOT's collaborative optimizations so that later steps keep what earlier ones
gave (sparsity-preserving clustering, pruning- and cluster-preserving QAT); pruning and
clustering wrappers are stripped before export. :func:`optimize` runs the steps on the loaded
model; :func:`finish` reads the built artifact and writes the report that goes into
``manifest.json`` under ``optimization``.

TensorFlow and TF-MOT are imported inside the functions that use them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgec.calibration import Dataset
from edgec.optimize.spec import OptimizeSpec, PruneSchedule, resolve
from edgec.progress import Progress

__all__ = ["OptimizeResult", "OptimizeSpec", "PruneSchedule", "finish", "optimize", "resolve"]

log = logging.getLogger(__name__)

LATENCY_NOTE = ("not measured by the build: 'edgec profile' measures the artifact on the device and 'edgec report' "
                "sets it against the fp32 artifact of the same source model")


@dataclasses.dataclass
class OptimizeResult:
    """The optimized model (stripped, ready to export) and the record of each step."""

    model: Any
    spec: OptimizeSpec
    data: Any  # train.FineTuneData
    steps: list[dict[str, Any]]
    accuracy_data: str  # what the per-step accuracies were measured on
    accuracy_x: np.ndarray
    accuracy_y: np.ndarray
    seconds: float
    structure: dict[str, Any] | None = None  # parameters and MACs of the original and the optimized model
    auto: dict[str, Any] | None = None  # --prune auto / --prune-channels auto: the curve measured, the choice

    def representative(self, limit: int, seed: int) -> Dataset:
        """Fine-tune inputs as int8 representative data (QAT builds without --calib)."""
        from edgec.calibration import count, take

        train, val = self.data.x_train, self.data.x_val
        if isinstance(train, dict):  # several inputs
            x = {n: np.ascontiguousarray(np.concatenate([train[n], val[n]]), dtype=np.float32) for n in train}
        else:
            x = np.ascontiguousarray(np.concatenate([train, val]), dtype=np.float32)
        total = count(x)
        if total > limit:
            x = take(x, np.sort(np.random.default_rng(seed).choice(total, size=limit, replace=False)))
        return Dataset(x=x, y=None,
                       source=f"{self.data.source} (fine-tune inputs; --qat without --calib)", total=total)


def optimize(model, fine_tune: Dataset, spec: OptimizeSpec, *, target, profile, eval_data: Dataset | None = None,
             progress: Progress | None = None) -> OptimizeResult:
    """Run the requested steps on a private copy of ``model`` (``model`` itself is not changed).

    Args:
        model: the loaded tf-keras model (the float reference and the distillation teacher).
        fine_tune: labelled fine-tune data; a held-out slice of it drives early stopping.
        spec: the steps and their settings (:func:`edgec.optimize.resolve`).
        target: the build's target; its ``qat_scheme(profile)`` picks the QAT scheme.
        profile: the build's device profile.
        eval_data: labelled eval data; per-step accuracies are measured on it when given,
            else on the held-out slice.
        progress: progress bars for the fine-tuning.

    Raises:
        EdgecError: the model or the data cannot be optimized as asked (one line naming the
            layer or the data and the way out).
    """
    progress = progress or Progress(enabled=False)
    with warnings.catch_warnings(record=True) as caught:  # TF-MOT warns freely; keep them for -vv
        warnings.simplefilter("always")
        if spec.auto is None:
            result = _optimize(model, fine_tune, spec, target, profile, eval_data, progress)
        else:
            result = _optimize_auto(model, fine_tune, spec, target, profile, eval_data, progress)
    for w in caught:
        log.debug("%s: %s", w.category.__name__, w.message)
    return result


def _optimize_auto(model, fine_tune, spec, target, profile, eval_data, progress) -> OptimizeResult:
    """The highest level of ``spec.auto`` within the budget (:mod:`edgec.optimize.auto`)."""
    from edgec.errors import EdgecError
    from edgec.optimize import auto, train

    flag = "--" + spec.auto.replace("_", "-")
    if eval_data is None or eval_data.y is None:
        raise EdgecError(f"{flag} auto measures the accuracy drop of each level on labelled eval data; "
                         f"'{eval_data.source if eval_data is not None else '--eval'}' has no labels "
                         "(an .npz with arrays x and y)")
    data = train.prepare(model, fine_tune, spec)  # split and teacher logits, shared by every level

    def run_level(level_spec: OptimizeSpec) -> OptimizeResult:
        return _optimize(model, fine_tune, level_spec, target, profile, eval_data, progress, data=data)

    result, record = auto.search(spec, run_level)
    result.auto = record
    return result


def _optimize(model, fine_tune, spec, target, profile, eval_data, progress, data=None) -> OptimizeResult:
    from edgec.tfcompat import fresh_names

    fresh_names()  # the layers the steps add are named as in a fresh process: the same bytes
    from edgec.optimize import channels as channels_step
    from edgec.optimize import cluster as cluster_step
    from edgec.optimize import graph, train
    from edgec.optimize import lowrank as lowrank_step
    from edgec.optimize import prune as prune_step
    from edgec.optimize import qat as qat_step

    t0 = time.perf_counter()
    graph.check_rebuildable(model)
    if spec.qat:
        qat_step.check_skip(model, spec.qat_skip)
    if data is None:
        data = train.prepare(model, fine_tune, spec)
    if eval_data is not None and eval_data.y is not None:
        acc_x, acc_y, acc_on = eval_data.x, eval_data.y, f"eval data '{eval_data.source}'"
    else:
        acc_x, acc_y, acc_on = data.x_val, data.y_val, f"held-out fine-tune slice ({len(data.y_val)} samples)"

    def accuracy(m) -> float:
        return round(train.accuracy(m, acc_x, acc_y), 6)

    steps: list[dict[str, Any]] = [{"step": "float", "accuracy": accuracy(model)}]
    current, folded = model, []
    if spec.prune_channels is not None:
        current, info = channels_step.prune_channels(current, data, spec, progress)
        steps.append({"step": "channels", "accuracy": accuracy(current), **info})
    if spec.low_ranking:
        current, info = lowrank_step.low_rank(current, data, spec, progress)
        steps.append({"step": "low_rank", "accuracy": accuracy(current), **info})
    structure = graph.compare(graph.totals(model), graph.totals(current))
    if spec.cluster is not None:  # share the values of the kernels the artifact will store
        current, folded = graph.fold_batchnorm(current)
    if spec.pruning:
        current, info = prune_step.prune(current, data, spec, progress)
        steps.append({"step": "prune", "accuracy": accuracy(current), **info})
    if spec.cluster is not None:
        current, info = cluster_step.cluster(current, data, spec, progress, preserve_sparsity=spec.pruning)
        info["folded_batchnorm"] = folded
        steps.append({"step": "cluster", "accuracy": accuracy(current), **info})
    if spec.qat:
        current, info = qat_step.qat(current, data, spec, progress, target_scheme=target.qat_scheme(profile),
                                     pruned=spec.pruning, clustered=spec.cluster is not None)
        steps.append({"step": "qat", "accuracy": accuracy(current), **info})
    for step in steps[1:]:
        log.info("optimize: after %s, accuracy %.2f %% on %s", step["step"], step["accuracy"] * 100, acc_on)
    return OptimizeResult(model=current, spec=spec, data=data, steps=steps, accuracy_data=acc_on,
                          accuracy_x=acc_x, accuracy_y=acc_y, seconds=round(time.perf_counter() - t0, 2),
                          structure=structure)


def finish(result: OptimizeResult, float_model, artifact: Path | None, *, artifact_accuracy: float | None,
           artifact_precision: str, representative: str | None, progress: Progress | None = None,
           float_tflite: bytes | None = None) -> dict[str, Any]:
    """The ``optimization`` section of the manifest: settings, steps, accuracies, per-layer table.

    Args:
        result: from :func:`optimize`.
        float_model: the original model; converted to a float .tflite as the size baseline.
        artifact: the built .tflite, or ``None`` when the target wrote no .tflite.
        artifact_accuracy: the artifact's accuracy on the same data as the steps, if measured.
        artifact_precision: precision of the artifact ("int8", ...).
        representative: where int8 representative data came from, if not ``--calib``.
        progress: unused; kept for callers that pass it.
        float_tflite: ``float_model`` converted to an fp32 .tflite, the size baseline (the build
            converts it once for all its targets); needed with an ``artifact``.
    """
    from edgec.inspection import compressed_sizes
    from edgec.optimize.report import artifact_report

    record: dict[str, Any] = {
        **result.spec.to_json(),
        "fine_tune_data": result.data.describe(),
        "accuracy_data": result.accuracy_data,
        "step_details": result.steps,
        "seconds": result.seconds,
    }
    if representative:
        record["representative_data"] = representative
    if result.auto is not None:
        record["auto"] = result.auto
    if result.structure is not None:
        record["structure"] = {**result.structure, "latency": LATENCY_NOTE}
    chain = [{"stage": s["step"], "accuracy": s["accuracy"]} for s in result.steps]
    if artifact_accuracy is not None:
        chain.append({"stage": f"artifact ({artifact_precision})", "accuracy": round(artifact_accuracy, 6)})
    base = chain[0]["accuracy"]
    for entry in chain:
        entry["drop_points"] = round((base - entry["accuracy"]) * 100, 4)
    record["accuracy"] = chain
    if artifact is None:
        record["artifact"] = None
        record["artifact_unavailable"] = ("the target wrote no .tflite and the per-layer table reads .tflite files; "
                                         "'edgec inspect' on the artifact shows its zeros per op")
        return record
    if result.spec.sparse_inference:
        record["sparse_inference"] = {**(record.get("sparse_inference") or {}), **sparse_record(artifact)}
    if float_tflite is None:
        raise ValueError("finish() needs float_tflite, the float model's fp32 .tflite, with an artifact")
    float_bytes = float_tflite
    record["float_tflite"] = {"bytes": len(float_bytes), **{f"{k}_bytes": v for k, v in compressed_sizes(float_bytes).items()}}
    from edgec.optimize.graph import inner, kernels_of

    # the optimized model's own layers too: a factorized layer adds '<name>_lowrank'
    kernels = {inner(layer).name: [name for name, _ in kernels_of(layer)] for layer in result.model.layers}
    kernels.update({layer.name: [name for name, _ in kernels_of(layer)] for layer in float_model.layers})
    record.update(artifact_report(artifact, len(float_bytes), kernels))
    return record


def sparse_record(artifact: Path) -> dict[str, Any]:
    """What a --sparse-inference artifact holds for XNNPACK: kernels stored sparse (read through
    DENSIFY ops) and whether the path can be taken at all; whether it is faster is a measurement."""
    from edgec import tflite_model

    m = tflite_model.load(artifact)
    densify = [op for op in m.operators if op.op == "DENSIFY"]
    sparse = [m.tensors[op.inputs[0]] for op in densify if op.inputs]
    return {
        "densify_ops": len(densify),
        "sparse_kernels": [{"tensor": t.name, "shape": list(t.shape), "stored_values": int(t.data.size)
                            if t.data is not None else None} for t in sparse],
        "speed": "XNNPACK takes its sparse path on its own when it can (fp32/fp16, LiteRT's default delegate); "
                 "whether it is faster than the dense model is measured by 'edgec profile' on the device and "
                 "by bench/bench_speed.py here",
    }
