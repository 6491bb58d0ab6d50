"""Checking a build request before TensorFlow loads: the profile, precision, options, paths and
data, with the compression steps resolved. Bad input fails here in well under a second, with one
:class:`~edgec.errors.EdgecError` line, before anything is written."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgec import profiles, targets
from edgec.budgets import BUILD, used_by
from edgec.budgets import check_value as check_budget_value
from edgec.config import BuildOptions, Precision
from edgec.errors import EdgecError, choices
from edgec.util import check_writable_dir


@dataclasses.dataclass
class BuildPlan:
    """A build request checked before TensorFlow loads: the model, the device profile, its target
    kind, the options (precision resolved) and the compression steps (``None`` without any)."""

    model: Any
    profile: profiles.Profile
    target: Any  # targets.base.Target
    options: BuildOptions
    spec: Any  # optimize.OptimizeSpec | None

    @property
    def precision(self) -> Precision:
        return self.options.precision


def parse_precision(value: str | Precision | None, profile: profiles.Profile) -> Precision:
    raw = value.value if isinstance(value, Precision) else (value or profile.default_precision)
    try:
        precision = Precision(raw)
    except ValueError:
        raise EdgecError(f"unknown precision '{raw}'; valid: {choices(p.value for p in Precision)}") from None
    return precision


def _tuple(value) -> tuple:
    return (value,) if isinstance(value, str) else tuple(value)


def plan(model: Any, target: str, **kwargs: Any) -> BuildPlan:
    """Check a build request without importing TensorFlow.

    Raises:
        EdgecError: bad input (exit code 2).
    """
    profile = profiles.get(target)
    kwargs = _normalized(kwargs, profile)
    options = BuildOptions(**{k: v for k, v in kwargs.items() if v is not None})
    options = dataclasses.replace(options, precision=parse_precision(options.precision, profile))
    precision = options.precision

    from edgec.optimize import resolve as resolve_optimization
    from edgec.optimize.spec import check_target as check_optimization_target

    spec = resolve_optimization(options, precision)
    check_optimization_target(spec, targets.get(profile.target), profile.id)
    from edgec.tfcompat import plan_onednn

    plan_onednn(training=spec is not None)
    target_impl = targets.get(profile.target)
    if options.require_compiler and not target_impl.device_compiler:
        raise EdgecError(f"--require-compiler applies to targets with a device compiler (edgetpu); profile "
                         f"'{profile.id}' is a {profile.target} target, which has none")
    target_impl.check(profile, precision, options)
    if not profile.supports(precision.value):
        raise EdgecError(
            f"profile '{profile.id}' ({profile.device}) does not support precision '{precision.value}'; "
            f"supported: {', '.join(profile.precisions)}"
        )
    if options.accuracy_control:
        from edgec.accuracy import check_request

        check_request(profile, precision, options)
    from edgec.accuracy.remedies import check_request as check_remedies

    check_remedies(profile, precision, options)
    _check_options(options, precision)
    check_writable_dir(options.out)
    if isinstance(model, (str, Path)):
        from edgec.model_io import detect_format

        detect_format(Path(model))
    for name in ("calib", "eval", "fine_tune"):
        data_spec = getattr(options, name)
        if data_spec and ":" not in str(data_spec) and not Path(data_spec).exists():
            raise EdgecError(f"--{name.replace('_', '-')} data '{data_spec}' does not exist")
    return BuildPlan(model, profile, target_impl, options, spec)


def _normalized(kwargs: dict[str, Any], profile) -> dict[str, Any]:
    """The keyword options in their checked types (paths, tuples, numbers), unknown names refused."""
    kwargs = dict(kwargs)
    if "precision" in kwargs:
        kwargs["precision"] = parse_precision(kwargs["precision"], profile)
    if "out" in kwargs and kwargs["out"] is not None:
        if isinstance(kwargs["out"], str) and not kwargs["out"].strip():
            raise EdgecError("--out is empty; name the output directory (e.g. dist)")
        kwargs["out"] = Path(kwargs["out"])
    if kwargs.get("qat_skip") is not None:
        kwargs["qat_skip"] = _tuple(kwargs["qat_skip"])
    if kwargs.get("custom_objects") is not None:
        from edgec.custom_objects import check as check_custom_objects

        value = kwargs["custom_objects"]
        kwargs["custom_objects"] = check_custom_objects((value,) if isinstance(value, (str, Path)) else value)
    for name in ("mean", "std"):
        if kwargs.get(name) is not None:
            from edgec.calibration.inputs import parse_numbers

            kwargs[name] = parse_numbers(kwargs[name], f"--{name}")
    if kwargs.get("std") is not None and any(v <= 0 for v in kwargs["std"]):
        raise EdgecError(f"--std values must not be 0 or negative (a spread), got {', '.join(f'{v:g}' for v in kwargs['std'])}")
    unknown = set(kwargs) - {f.name for f in dataclasses.fields(BuildOptions)}
    if unknown:
        raise EdgecError(f"unknown build options {sorted(unknown)}; valid: {choices(f.name for f in dataclasses.fields(BuildOptions))}")
    for name, value in kwargs.items():  # a NaN budget or rate fails (or passes) every comparison
        if isinstance(value, float) and not math.isfinite(value):
            raise EdgecError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    return kwargs


def _check_options(options: BuildOptions, precision: Precision) -> None:
    """The options that need only each other (budgets, eval data, float ops)."""
    if options.calib_samples <= 0:
        raise EdgecError(f"--calib-samples must be positive, got {options.calib_samples}")
    for budget in used_by(BUILD).values():  # the budgets a build checks on its artifact (edgec.budgets)
        value = getattr(options, budget.name)
        problem = None if value is None else check_budget_value(budget.name, value)
        if problem:
            raise EdgecError(f"{budget.option} {value:g}: {problem} ({budget.unit})")
    if options.max_accuracy_drop is not None and not options.eval:
        raise EdgecError("--max-accuracy-drop needs labelled --eval data to measure the drop")
    if options.eval_output is not None and not options.eval:
        raise EdgecError("--eval-output names the output the --eval labels belong to; add --eval DATA")
    if options.allow_float_ops and precision is not Precision.INT8:
        raise EdgecError(f"--allow-float-ops applies to int8 builds; this build's precision is {precision.value}")


def plan_targets(model: Any, targets: Sequence[str], **kwargs: Any) -> list[BuildPlan]:
    """Check a request for several device profiles (one :class:`BuildPlan` each) without importing
    TensorFlow.

    Raises:
        EdgecError: no target, a target given twice (each writes ``OUT/PROFILE``), or bad input
            for any of them.
    """
    if not targets:
        raise EdgecError("no target given; pass --target PROFILE (repeatable)")
    requests = [plan(model, target, **kwargs) for target in targets]
    seen: dict[str, str] = {}
    for target, request in zip(targets, requests, strict=True):
        if request.profile.id in seen:
            raise EdgecError(f"target '{target}' is given twice (profile '{request.profile.id}'); each target writes "
                             f"OUT/PROFILE once")
        seen[request.profile.id] = target
    return requests
