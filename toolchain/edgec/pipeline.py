"""``edgec build``: load -> (optimize) -> target build -> verify -> manifest, atomically.

Cheap checks (profile, precision, paths, out dir) run before TensorFlow is imported, so bad
input fails in well under a second.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from edgec import manifest as manifest_mod
from edgec import profiles, targets
from edgec.config import BuildOptions, Precision
from edgec.errors import CheckFailed, EdgecError, choices
from edgec.progress import Progress
from edgec.util import atomic_dir, check_writable_dir, sha256_file

log = logging.getLogger(__name__)


@dataclasses.dataclass
class BuildResult:
    """What a build produced. ``passed`` is False when a budget check failed."""

    out_dir: Path
    manifest: dict[str, Any]

    @property
    def checks(self) -> list[dict[str, Any]]:
        return self.manifest.get("checks", [])

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self.checks)

    @property
    def verification(self) -> dict[str, Any] | None:
        return self.manifest.get("verification")

    def raise_for_checks(self) -> None:
        """Raise :class:`CheckFailed` naming every failed check."""
        failed = [c for c in self.checks if not c["passed"]]
        if failed:
            raise CheckFailed("; ".join(c["message"] for c in failed))


def parse_precision(value: str | Precision | None, profile: profiles.Profile) -> Precision:
    raw = value.value if isinstance(value, Precision) else (value or profile.default_precision)
    try:
        precision = Precision(raw)
    except ValueError:
        raise EdgecError(f"unknown precision '{raw}'; valid: {choices(p.value for p in Precision)}") from None
    return precision


def build(model: Any, target: str, *, progress: Progress | None = None, **kwargs: Any) -> BuildResult:
    """Build, verify and record the artifacts of ``model`` for one device profile.

    Args:
        model: path to .keras/.h5/SavedModel, or a tf-keras model.
        target: profile id (``edgec targets`` lists them) or a profile .toml path.
        progress: progress display; none by default.
        **kwargs: fields of :class:`edgec.config.BuildOptions`.

    Returns:
        The build directory and its manifest; check ``passed`` for the budget checks.

    Raises:
        EdgecError: bad input (exit code 2); nothing is written in that case.
    """
    profile = profiles.get(target)
    if "precision" in kwargs:
        kwargs["precision"] = parse_precision(kwargs["precision"], profile)
    if "out" in kwargs and kwargs["out"] is not None:
        kwargs["out"] = Path(kwargs["out"])
    if isinstance(kwargs.get("qat_skip"), str):
        kwargs["qat_skip"] = (kwargs["qat_skip"],)
    elif kwargs.get("qat_skip") is not None:
        kwargs["qat_skip"] = tuple(kwargs["qat_skip"])
    unknown = set(kwargs) - {f.name for f in dataclasses.fields(BuildOptions)}
    if unknown:
        raise EdgecError(f"unknown build options {sorted(unknown)}; valid: {choices(f.name for f in dataclasses.fields(BuildOptions))}")
    options = BuildOptions(**{k: v for k, v in kwargs.items() if v is not None})
    precision = parse_precision(options.precision, profile)
    options = dataclasses.replace(options, precision=precision)

    from edgec.optimize import resolve as resolve_optimization
    from edgec.optimize.spec import check_target as check_optimization_target

    spec = resolve_optimization(options, precision)
    check_optimization_target(spec, profile.target, profile.id)
    target_impl = targets.get(profile.target)
    target_impl.check(profile, precision, options)
    if not profile.supports(precision.value):
        raise EdgecError(
            f"profile '{profile.id}' ({profile.device}) does not support precision '{precision.value}'; "
            f"supported: {', '.join(profile.precisions)}"
        )
    if options.calib_samples <= 0:
        raise EdgecError(f"--calib-samples must be positive, got {options.calib_samples}")
    if options.max_accuracy_drop is not None and options.max_accuracy_drop < 0:
        raise EdgecError(f"--max-accuracy-drop must be >= 0 points, got {options.max_accuracy_drop}")
    if options.max_accuracy_drop is not None and not options.eval:
        raise EdgecError("--max-accuracy-drop needs labelled --eval data to measure the drop")
    check_writable_dir(options.out)
    if isinstance(model, (str, Path)):
        from edgec.model_io import detect_format

        detect_format(Path(model))
    for name in ("calib", "eval", "fine_tune"):
        data_spec = getattr(options, name)
        if data_spec and ":" not in str(data_spec) and not Path(data_spec).exists():
            raise EdgecError(f"--{name.replace('_', '-')} data '{data_spec}' does not exist")

    progress = progress or Progress(enabled=False)
    timings: dict[str, float] = {}
    with progress:
        return _run(model, profile, target_impl, options, precision, progress, timings, spec)


def _run(model, profile, target_impl, options: BuildOptions, precision: Precision, progress: Progress,
         timings: dict[str, float], spec=None) -> BuildResult:
    from edgec import calibration
    from edgec.model_io import input_spec, load_model
    from edgec.targets.base import BuildContext
    from edgec.tfcompat import library_versions, set_seed

    t0 = time.perf_counter()
    with progress.task("load model"):
        loaded = load_model(model)
    set_seed(options.seed)
    shape, _ = input_spec(loaded.model)
    calib = eval_data = None
    if options.calib:
        calib = calibration.load(options.calib, shape, purpose="calibration", limit=options.calib_samples,
                                 seed=options.seed)
    if options.eval:
        eval_data = calibration.load(options.eval, shape, purpose="eval", seed=options.seed,
                                     need_labels=options.max_accuracy_drop is not None)
    fine_tune = None
    if spec is not None:
        fine_tune = calibration.load(options.fine_tune, shape, purpose="fine-tune", seed=options.seed,
                                     need_labels=True)
    timings["load"] = time.perf_counter() - t0

    model_out, optimized, representative = loaded.model, None, None
    if spec is not None:
        from edgec.optimize import optimize

        t0 = time.perf_counter()
        optimized = optimize(loaded.model, fine_tune, spec, target=target_impl, profile=profile,
                             eval_data=eval_data, progress=progress)
        model_out = optimized.model
        if spec.qat and calib is None:  # QAT learned the ranges; the fine-tune inputs calibrate the rest
            calib = optimized.representative(options.calib_samples, options.seed)
            representative = calib.source
        timings["optimize"] = time.perf_counter() - t0

    final_dir = Path(options.out) / profile.id
    with atomic_dir(final_dir) as work:
        ctx = BuildContext(profile=profile, options=options, precision=precision, model=model_out,
                           float_model=loaded.model, calib=calib, eval=eval_data, workdir=work,
                           progress=progress)
        t0 = time.perf_counter()
        artifacts = target_impl.build(ctx)
        timings["build"] = time.perf_counter() - t0

        records = []
        for art in artifacts:
            path = work / art.file
            records.append({"file": art.file, "role": art.role, "format": art.format,
                            "precision": art.precision, "sha256": sha256_file(path),
                            "bytes": path.stat().st_size, **art.info})

        verification = None
        if eval_data is not None:
            t0 = time.perf_counter()
            verification = _verify_all(ctx, target_impl, artifacts, records)
            timings["verify"] = time.perf_counter() - t0

        optimization = None
        if optimized is not None:
            t0 = time.perf_counter()
            optimization = _optimization_report(ctx, target_impl, artifacts, records, optimized, representative)
            timings["report"] = time.perf_counter() - t0

        checks = []
        if options.max_accuracy_drop is not None and verification is not None:
            drop = verification.get("accuracy_drop_points")
            if drop is None:
                raise EdgecError("--max-accuracy-drop needs a classifier output (batch, classes) and labels to measure accuracy")
            ok = drop <= options.max_accuracy_drop
            checks.append({
                "name": "max_accuracy_drop", "limit": options.max_accuracy_drop, "value": drop, "passed": ok,
                "message": (f"accuracy drop {drop:.2f} points is within the budget of {options.max_accuracy_drop:g}" if ok
                            else f"accuracy drop {drop:.2f} points exceeds --max-accuracy-drop {options.max_accuracy_drop:g} "
                                 f"(float {verification['float_accuracy']:.4f}, artifact {verification['artifact_accuracy']:.4f})"),
            })
        manifest = manifest_mod.new(
            profile=profile.to_json(), target=profile.target, runtime=target_impl.runtime,
            precision=precision.value, source=loaded.describe(), options=options.to_json(),
            data={"calib": calib.describe() if calib else None, "eval": eval_data.describe() if eval_data else None},
            versions=library_versions(), artifacts=records, verification=verification, optimization=optimization,
            checks=checks,
            timings_s={k: round(v, 3) for k, v in timings.items()}, **ctx.extra,
        )
        manifest_mod.write(work, manifest)
    return BuildResult(out_dir=final_dir, manifest=manifest)


def _optimization_report(ctx, target_impl, artifacts, records, optimized, representative) -> dict[str, Any]:
    """The manifest's ``optimization`` section, read from the first .tflite artifact."""
    from edgec.optimize import finish
    from edgec.verify import run_batched

    index = next((i for i, a in enumerate(artifacts) if a.format == "tflite"), None)
    path = ctx.workdir / artifacts[index].file if index is not None else None
    accuracy = None
    if path is not None:
        verified = records[index].get("verification") or {}
        if "artifact_accuracy" in verified and ctx.eval is not None and optimized.accuracy_x is ctx.eval.x:
            accuracy = verified["artifact_accuracy"]
        else:
            try:
                out = run_batched(target_impl.runner(path, ctx), optimized.accuracy_x, 64)[0]
                accuracy = float((out.reshape(len(out), -1).argmax(axis=1) == optimized.accuracy_y).mean())
            except Exception as exc:  # a target without a host runner for this file: report it unmeasured
                log.warning("artifact accuracy not measured on %s: %s", optimized.accuracy_data, exc)
    return finish(optimized, ctx.float_model, path, artifact_accuracy=accuracy, artifact_precision=ctx.precision.value,
                  representative=representative, progress=ctx.progress)


def _verify_all(ctx, target_impl, artifacts, records) -> dict[str, Any] | None:
    """Verify each artifact that has a host runtime; return the primary one's result."""
    from edgec.verify import compare, keras_predict, run_batched

    data = ctx.eval
    with ctx.progress.task("verify: float model", total=len(data)) as task:
        float_outs = run_batched(keras_predict(ctx.float_model), data.x, 64, task)
    primary = None
    for art, record in zip(artifacts, records, strict=True):
        if not art.verify_with:
            continue
        runner = target_impl.runner(ctx.workdir / art.file, ctx)
        with ctx.progress.task(f"verify: {art.file} ({art.verify_with})", total=len(data)) as task:
            outs = run_batched(runner, data.x, 64, task)
        result = compare(float_outs, outs, data.y)
        result.update(data=data.source, runtime=art.verify_with, artifact=art.file)
        record["verification"] = result
        primary = primary or result
    return primary
