"""Accuracy-aware int8: find the ops that post-training quantization hurts, and keep only those in float.

``edgec analyze`` measures, per quantizable op of a target's int8 model, its weight and activation
scales, its per-layer error (RMSE in quantization steps, SQNR) and its sensitivity: the metric with
that op alone left in float. ``edgec build --accuracy-control`` keeps the fewest ops in float that
bring the drop within ``--max-accuracy-drop`` (NNCF's greedy revert; :mod:`.search`).

The metric is the labelled output's accuracy on ``--eval``, or top-1 agreement with the float model
when the data has no labels (:mod:`.metric`). The backends belong to the target kinds: a kind's
:meth:`~edgec.targets.base.Target.accuracy_backend` gives it (TFLite selective quantization,
TensorRT's Q/DQ ONNX without Q/DQ around the chosen nodes), and its
:attr:`~edgec.targets.base.Target.accuracy_control` says whether builds may keep ops in float (the
Edge TPU refuses: a float op leaves the TPU, and every op after it runs on the CPU).

Nothing here imports TensorFlow at module level: :func:`check_request` runs before it loads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgec import targets
from edgec.errors import EdgecError
from edgec.targets.base import Target


def controlled_kinds() -> tuple[str, ...]:
    """The target kinds accuracy control builds for."""
    return tuple(k for k in targets.REGISTRY if targets.target_class(k).accuracy_control)


def analyzed_kinds() -> tuple[str, ...]:
    """The target kinds ``edgec analyze`` analyzes: those with an accuracy backend."""
    return tuple(k for k in targets.REGISTRY
                 if targets.target_class(k).accuracy_backend is not Target.accuracy_backend)


def __getattr__(name: str):
    # CONTROLLED_KINDS / ANALYZED_KINDS follow the registry (a kind registered later is counted)
    if name == "CONTROLLED_KINDS":
        return controlled_kinds()
    if name == "ANALYZED_KINDS":
        return analyzed_kinds()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_request(profile, precision, options) -> None:
    """Reject an ``--accuracy-control`` build that cannot work, before TensorFlow loads.

    Raises:
        EdgecError: (exit 2) the target kind, precision or options do not allow it.
    """
    if not getattr(options, "accuracy_control", False):
        return
    target = targets.get(profile.target)
    if not target.accuracy_control:
        raise EdgecError(target.accuracy_control_refusal(profile) or
                         f"--accuracy-control is available for target kinds {', '.join(controlled_kinds())}; "
                         f"profile '{profile.id}' is a {profile.target} target")
    if precision.value != "int8":
        raise EdgecError(f"--accuracy-control chooses which ops of an int8 model stay float; this build's precision "
                         f"is {precision.value}: add --precision int8")
    if options.qat:
        raise EdgecError("--accuracy-control reverts ops of a post-training quantized model (ranges from --calib); "
                         "with --qat the ranges are learned: use one or the other")
    if not options.eval:
        raise EdgecError("--accuracy-control measures the drop on --eval DATA (with labels: accuracy; without: top-1 "
                         "agreement with the float model)")
    if options.max_accuracy_drop is None:
        raise EdgecError("--accuracy-control needs the budget it meets: add --max-accuracy-drop POINTS")


def float_ops(path: Path, fmt: str) -> list[dict[str, Any]]:
    """The ops of an int8 artifact that still compute in float (empty when full-integer), read by
    the target kind whose format it is (:meth:`edgec.targets.base.Target.float_ops`).

    Raises:
        ValueError: no kind reads this format.
    """
    for kind in targets.REGISTRY:
        found = targets.get(kind).float_ops(path, fmt)
        if found is not None:
            return found
    raise ValueError(f"no float-op check for format {fmt}")


def mark_chosen(path: Path, fmt: str, float_ops: list[dict[str, Any]], chosen: list[dict[str, str]]) -> list[dict[str, Any]]:
    """``float_ops`` of an artifact with the entries accuracy control kept in float marked
    ``"chosen": true`` (the full-integer check does not count those); others stay as they are."""
    for kind in targets.REGISTRY:
        marked = targets.get(kind).mark_chosen(path, fmt, float_ops, chosen)
        if marked is not None:
            return marked
    return float_ops


def backend_for(profile, model, calib, *, progress=None, threads: int | None = None):
    """The int8 quantization of ``model`` for the profile's target kind, with any ops left in float.

    Raises:
        EdgecError: a target kind without a backend; conversion errors.
    """
    backend = targets.get(profile.target).accuracy_backend(profile, model, calib, progress=progress,
                                                           threads=threads or os.cpu_count() or 1)
    if backend is None:
        raise EdgecError(f"edgec analyze covers target kinds {', '.join(analyzed_kinds())}; profile '{profile.id}' "
                         f"is a {profile.target} target")
    return backend
