"""``edgec build``: load -> (optimize) -> target build -> verify -> manifest, atomically.

Cheap checks (profile, precision, paths, out dir) run before TensorFlow is imported, so bad
input fails in well under a second. Training and sampling are seeded with TensorFlow's op
determinism on, so the same model, data, options and seed give the same artifact bytes.

The stages that do not depend on the target (loading the model and data, the float reference,
the compression fine-tune per QAT scheme) are kept by a :class:`BuildSession`, so a build for
several targets (``edgec build --target A --target B``, ``edgec ci``) runs them once; each target
then builds, verifies, checks and writes its manifest as a build for it alone would.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgec import manifest as manifest_mod
from edgec import profiles, targets
from edgec.config import BuildOptions, Precision
from edgec.errors import CheckFailed, EdgecError, choices
from edgec.progress import Progress
from edgec.util import atomic_dir, check_writable_dir, output_locks, sha256_file

log = logging.getLogger(__name__)


@dataclasses.dataclass
class BuildResult:
    """What a build produced. ``passed`` is False when a budget check failed."""

    out_dir: Path
    manifest: dict[str, Any]
    reused: tuple[str, ...] = ()  # stages shared with an earlier build of the same session ("load", "optimize")

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
    options = BuildOptions(**{k: v for k, v in kwargs.items() if v is not None})
    options = dataclasses.replace(options, precision=parse_precision(options.precision, profile))
    precision = options.precision

    from edgec.optimize import resolve as resolve_optimization
    from edgec.optimize.spec import check_target as check_optimization_target

    spec = resolve_optimization(options, precision)
    check_optimization_target(spec, profile.target, profile.id)
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
    if options.calib_samples <= 0:
        raise EdgecError(f"--calib-samples must be positive, got {options.calib_samples}")
    if options.max_accuracy_drop is not None and options.max_accuracy_drop < 0:
        raise EdgecError(f"--max-accuracy-drop must be >= 0 points, got {options.max_accuracy_drop}")
    if options.max_accuracy_drop is not None and not options.eval:
        raise EdgecError("--max-accuracy-drop needs labelled --eval data to measure the drop")
    if options.eval_output is not None and not options.eval:
        raise EdgecError("--eval-output names the output the --eval labels belong to; add --eval DATA")
    if options.allow_float_ops and precision is not Precision.INT8:
        raise EdgecError(f"--allow-float-ops applies to int8 builds; this build's precision is {precision.value}")
    check_writable_dir(options.out)
    if isinstance(model, (str, Path)):
        from edgec.model_io import detect_format

        detect_format(Path(model))
    for name in ("calib", "eval", "fine_tune"):
        data_spec = getattr(options, name)
        if data_spec and ":" not in str(data_spec) and not Path(data_spec).exists():
            raise EdgecError(f"--{name.replace('_', '-')} data '{data_spec}' does not exist")
    return BuildPlan(model, profile, target_impl, options, spec)


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


def build(model: Any, target: str | Sequence[str], *, progress: Progress | None = None,
          **kwargs: Any) -> BuildResult | list[BuildResult]:
    """Build, verify and record the artifacts of ``model`` for one device profile, or for several.

    Several targets share the work that does not depend on the target: the model is loaded and its
    float reference computed once, and each compression fine-tune runs once per QAT scheme (the
    TFLite and Edge TPU targets share TF-MOT's default scheme). Each target writes ``OUT/PROFILE``
    with the same bytes as a build for that target alone.

    Args:
        model: path to .keras/.h5/SavedModel, or a tf-keras model.
        target: profile id (``edgec targets`` lists them) or a profile .toml path; or a list of them.
        progress: progress display; none by default.
        **kwargs: fields of :class:`edgec.config.BuildOptions`.

    Returns:
        The build directory and its manifest (check ``passed`` for the budget checks); a list of
        them, in the order of the targets, when ``target`` is a list.

    Raises:
        EdgecError: bad input (exit code 2); nothing is written in that case.
    """
    single = isinstance(target, (str, Path))
    requests = [plan(model, str(target), **kwargs)] if single else plan_targets(model, list(target), **kwargs)
    session = BuildSession(progress)
    # each OUT/PROFILE is locked before the heavy work: a second build into it waits, saying so
    with output_locks(Path(r.options.out) / r.profile.id for r in requests), session.progress:
        results = [session.run(request) for request in requests]
    return results[0] if single else results


@dataclasses.dataclass
class Inputs:
    """The loaded model and data of a build, and what was decided about them."""

    loaded: Any  # model_io.LoadedModel
    preprocessing: Any  # calibration.inputs.InputPreprocessing
    calib: Any
    eval: Any
    fine_tune: Any
    reference: Any  # verify.Reference | None
    determinism: dict[str, Any]
    warnings: list[str]


def prepare_inputs(request: BuildPlan, progress: Progress) -> Inputs:
    from edgec import calibration
    from edgec.calibration import inputs as input_prep
    from edgec.model_io import SignatureModel, data_shapes, load_model
    from edgec.tfcompat import fresh_names, set_seed
    from edgec.verify import reference

    options = request.options
    determinism = set_seed(options.seed)
    fresh_names()
    with progress.task("load model"):
        from edgec.accuracy.remedies import Remedies

        # the compression steps and the weight remedies rewrite tf-keras layers (Keras 3: the bridge)
        weight_remedies = any(Remedies.from_options(options).keras)
        loaded = load_model(request.model, keras_layers=request.spec is not None or weight_remedies,
                            custom_objects=options.custom_objects)
        if loaded.keras and loaded.keras["path"] == "bridge":  # Keras 3 -> tf-keras layers, checked below
            from edgec.keras3 import bridge

            loaded = bridge.to_tf_keras(loaded)
    if request.spec is not None and isinstance(loaded.model, SignatureModel):
        raise EdgecError(f"the compression steps train Keras layers, but '{loaded.path}' is a SavedModel without "
                         "Keras metadata (its serving signature); save the model with tf-keras model.save(), or drop "
                         "--prune/--cluster/--qat")
    if weight_remedies and isinstance(loaded.model, SignatureModel):
        raise EdgecError(f"--equalize, --bias-correct and --adaround rewrite Keras layers, but '{loaded.path}' is a "
                         "SavedModel without Keras metadata (its serving signature); save the model with "
                         "model.save(), or drop them (--range and --int16-activations work on any model)")
    shape = data_shapes(loaded.model)  # {input name: shape} for several inputs
    preprocessing, warnings = input_prep.resolve(loaded.model, input_range=options.input_range,
                                                 normalize=options.normalize, mean=options.mean, std=options.std)

    def load(spec, purpose, **kw):
        with progress.task(f"load data: {purpose}"):
            return calibration.load(spec, shape, purpose=purpose, seed=options.seed, preprocess=preprocessing, **kw)

    # accuracy control measures its budget as top-1 agreement with the float model when eval has no labels
    needs_labels = options.max_accuracy_drop is not None and not options.accuracy_control
    calib = load(options.calib, "calibration", limit=options.calib_samples) if options.calib else None
    eval_data = load(options.eval, "eval", need_labels=needs_labels) if options.eval else None
    fine_tune = load(options.fine_tune, "fine-tune", need_labels=True) if request.spec is not None else None
    if loaded.keras and loaded.keras["path"] == "bridge":
        from edgec.keras3 import bridge

        bridge.check(loaded, (calib if calib is not None else fine_tune).x)
    expected = preprocessing.expected()
    for data, what in ((calib, "calibration data"), (eval_data, "eval data"), (fine_tune, "fine-tune data")):
        # the expected range is the preprocessing's, which several inputs apply to their pixel inputs only
        if data is not None and not isinstance(data.x, dict):
            line = input_prep.range_warning(data.x, expected, f"{what} '{data.source}'")
            if line:
                warnings.append(line)
    if calib is not None:
        against = eval_data if eval_data is not None else fine_tune
        if against is not None:
            from edgec.calibration import arrays

            theirs = dict(arrays(against.x))
            for name, arr in arrays(calib.x):
                where = f" input '{name}'" if name is not None else ""
                line = input_prep.mismatch_warning(arr, theirs[name], f"calibration data '{calib.source}'{where}",
                                                   f"the {'eval' if against is eval_data else 'fine-tune'} data "
                                                   f"'{against.source}'")
                if line:
                    warnings.append(line)
    ref = reference(loaded.model, eval_data, options.eval_output, progress) if eval_data is not None else None
    for line in warnings:
        log.warning("%s", line)
    return Inputs(loaded, preprocessing, calib, eval_data, fine_tune, ref, determinism, warnings)


def _model_key(model: Any) -> tuple:
    if isinstance(model, (str, Path)):
        return ("path", str(Path(model).resolve()))
    return ("object", id(model))


def _inputs_key(request: BuildPlan) -> tuple:
    """What the loaded data and the float reference depend on."""
    o = request.options
    return (_model_key(request.model), o.seed, o.calib, o.calib_samples, o.eval, o.eval_output,
            o.max_accuracy_drop is not None, o.input_range, o.normalize, o.mean, o.std,
            o.fine_tune if request.spec is not None else None, request.spec is not None)


def _scheme_key(scheme: Any) -> str | None:
    return None if scheme is None else f"{type(scheme).__module__}.{type(scheme).__qualname__}"


class BuildSession:
    """Builds in one process that share their target-independent stages.

    The loaded model, data and float reference are kept per model and data options; the
    compression result per those, the compression settings and the QAT scheme of the target
    (``Target.qat_scheme(profile)``). A stage that failed fails every build that needs it with the
    same error, without running again. Sampling and training are seeded inside each stage, so a
    build here writes the same bytes as a build for its target alone.
    """

    def __init__(self, progress: Progress | None = None):
        self.progress = progress or Progress(enabled=False)
        self._inputs: dict[tuple, tuple[Any, float]] = {}
        self._optimized: dict[tuple, tuple[Any, float]] = {}
        self._float_tflite: dict[tuple, bytes] = {}

    def _stage(self, store: dict, key: tuple, make):
        """``(value, seconds, reused)``; ``make()`` runs once per key, its error is kept too."""
        if key not in store:
            t0 = time.perf_counter()
            try:
                store[key] = (make(), time.perf_counter() - t0)
            except EdgecError as exc:
                store[key] = (exc, time.perf_counter() - t0)
                raise
            reused = False
        else:
            reused = True
        value, seconds = store[key]
        if isinstance(value, EdgecError):
            raise value
        return value, seconds, reused

    def inputs(self, request: BuildPlan) -> tuple[Inputs, float, bool]:
        """The loaded model, data and float reference of ``request`` (loaded once per key)."""
        return self._stage(self._inputs, _inputs_key(request), lambda: prepare_inputs(request, self.progress))

    def optimized(self, request: BuildPlan, data: Inputs) -> tuple[Any, float, bool]:
        """The compression result of ``request`` (fine-tuned once per QAT scheme)."""
        spec, target, profile = request.spec, request.target, request.profile
        scheme = _scheme_key(target.qat_scheme(profile)) if spec.qat else None

        def make():
            from edgec.optimize import optimize

            return optimize(data.loaded.model, data.fine_tune, spec, target=target, profile=profile,
                            eval_data=data.eval, progress=self.progress)

        return self._stage(self._optimized, (_inputs_key(request), spec, scheme), make)

    def float_tflite(self, request: BuildPlan, data: Inputs) -> bytes:
        """The source model as an fp32 .tflite (the size baseline), converted once per model."""
        key = _model_key(request.model)
        if key not in self._float_tflite:
            from edgec.targets.tflite import convert

            self._float_tflite[key] = convert(data.loaded.model, Precision.FP32, progress=self.progress)
        return self._float_tflite[key]

    def run(self, request: BuildPlan, out_dir: Path | None = None) -> BuildResult:
        """Build one target: shared stages, then the target's build, verification, checks and manifest.

        Args:
            request: from :func:`plan`.
            out_dir: the build directory (default ``OUT/PROFILE``).
        """
        from edgec.accuracy import build as accuracy_build
        from edgec.calibration import inputs as input_prep
        from edgec.model_io import input_specs
        from edgec.targets.base import BuildContext
        from edgec.tfcompat import library_versions

        options, profile, target_impl, precision = request.options, request.profile, request.target, request.precision
        progress = self.progress
        timings: dict[str, float] = {}
        reused: list[str] = []
        data, timings["load"], again = self.inputs(request)
        _check_labelled(request, data)
        if again:
            reused.append("load")
        loaded = data.loaded

        model_out, optimized, representative, calib = loaded.model, None, None, data.calib
        if request.spec is not None:
            optimized, timings["optimize"], again = self.optimized(request, data)
            if again:
                reused.append("optimize")
            model_out = optimized.model
            if request.spec.qat and calib is None:  # QAT learned the ranges; the fine-tune inputs calibrate the rest
                calib = optimized.representative(options.calib_samples, options.seed)
                representative = calib.source

        final_dir = Path(out_dir) if out_dir is not None else Path(options.out) / profile.id
        with atomic_dir(final_dir) as work:
            ctx = BuildContext(profile=profile, options=options, precision=precision, model=model_out,
                               float_model=loaded.model, calib=calib, eval=data.eval, workdir=work,
                               progress=progress, reference=data.reference, out_dir=final_dir,
                               int8=accuracy_build)
            t0 = time.perf_counter()
            artifacts = target_impl.build(ctx)
            timings["build"] = time.perf_counter() - t0
            records = [_record(work, art, precision) for art in artifacts]

            verification = None
            if data.reference is not None:
                t0 = time.perf_counter()
                verification = _verify_all(ctx, target_impl, artifacts, records, data.reference)
                timings["verify"] = time.perf_counter() - t0

            optimization = None
            if optimized is not None:
                t0 = time.perf_counter()
                optimization = _optimization_report(ctx, target_impl, artifacts, records, optimized, representative,
                                                    lambda: self.float_tflite(request, data))
                timings["report"] = time.perf_counter() - t0

            checks = build_checks(options, verification, records, ctx.extra.get("accuracy_control"))
            manifest = manifest_mod.new(
                profile=profile.to_json(), target=profile.target, runtime=target_impl.runtime,
                precision=precision.value, source=loaded.describe(), options=options.to_json(),
                reproducibility=data.determinism, input=data.preprocessing.describe(),
                inputs=input_prep.inputs_record(input_specs(loaded.model), data.preprocessing.describe(),
                                                {"calib": calib, "eval": data.eval, "fine_tune": data.fine_tune}),
                data={"calib": calib.describe() if calib else None,
                      "eval": data.eval.describe() if data.eval else None},
                versions=library_versions(), artifacts=records, verification=verification, optimization=optimization,
                checks=checks, warnings=list(data.warnings),
                timings_s={k: round(v, 3) for k, v in timings.items()}, **ctx.extra,
            )
            manifest_mod.write(work, manifest)
        return BuildResult(out_dir=final_dir, manifest=manifest, reused=tuple(reused))


def _check_labelled(request: BuildPlan, data: Inputs) -> None:
    # accuracy control measures its budget as top-1 agreement with the float model when eval has no labels
    options = request.options
    needs_labels = options.max_accuracy_drop is not None and not options.accuracy_control
    if needs_labels and (data.reference is None or data.reference.labelled is None):
        raise EdgecError("--max-accuracy-drop needs a classification output (batch, classes) for the --eval labels; "
                         f"model '{data.loaded.model.name}' has none")


def _record(work: Path, art, precision: Precision) -> dict[str, Any]:
    """The manifest entry of one artifact; int8 model files list the ops that still compute in float."""
    from edgec.accuracy import float_ops

    path = work / art.file
    record = {"file": art.file, "role": art.role, "format": art.format, "precision": art.precision,
              "sha256": sha256_file(path), "bytes": path.stat().st_size, **art.info}
    if art.precision == Precision.INT8.value and art.format in ("tflite", "onnx") and art.role != "edgetpu_model":
        record["float_ops"] = float_ops(path, art.format)
        if record.get("float_ops_chosen"):  # kept float by --accuracy-control, on purpose
            from edgec.accuracy import mark_chosen

            record["float_ops"] = mark_chosen(path, art.format, record["float_ops"], record["float_ops_chosen"])
    return record


def build_checks(options: BuildOptions, verification: dict[str, Any] | None,
            records: list[dict[str, Any]], control: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    checks = []
    if options.max_accuracy_drop is not None and control is not None and not control["metric"]["labelled"]:
        drop = control["after"]["drop_points"]  # no labels: top-1 disagreement with the float model
        ok = drop <= options.max_accuracy_drop
        checks.append({
            "name": "max_accuracy_drop", "limit": options.max_accuracy_drop, "value": drop, "passed": ok,
            "metric": "agreement",
            "message": (f"top-1 disagreement with the float model {drop:.2f} points (no labels) is "
                        + (f"within the budget of {options.max_accuracy_drop:g}" if ok else
                           f"over --max-accuracy-drop {options.max_accuracy_drop:g}, even with "
                           f"{len(control['float_ops'])} ops kept in float (the best found)")),
        })
    elif options.max_accuracy_drop is not None and verification is not None:
        drop = verification["accuracy_drop_points"]
        ok = drop <= options.max_accuracy_drop
        where = f" on output '{verification['eval_output']}'" if len(verification["outputs"]) > 1 else ""
        checks.append({
            "name": "max_accuracy_drop", "limit": options.max_accuracy_drop, "value": drop, "passed": ok,
            "message": (f"accuracy drop {drop:.2f} points{where} is within the budget of {options.max_accuracy_drop:g}" if ok
                        else f"accuracy drop {drop:.2f} points{where} exceeds --max-accuracy-drop {options.max_accuracy_drop:g} "
                             f"(float {verification['float_accuracy']:.4f}, artifact {verification['artifact_accuracy']:.4f})"),
        })
    if verification is not None and verification.get("non_finite_outputs"):
        bad = [o for o in verification["outputs"] if o.get("non_finite_samples")]
        checks.append({"name": "finite_outputs", "value": sum(o["non_finite_samples"] for o in bad), "passed": False,
                       "message": f"{verification['artifact']} outputs NaN or Inf on "
                                  + ", ".join(f"{o['non_finite_samples']} samples of '{o['name']}'" for o in bad)
                                  + f" of {verification['data']}, where the float model's outputs are finite"})
    for record in records:
        ops = record.get("float_ops")
        if ops is None:
            continue
        chosen = [o for o in ops if o.get("chosen")]
        if chosen and len(chosen) == len(ops):
            kept = record.get("float_ops_chosen") or []
            checks.append({"name": "full_integer", "artifact": record["file"], "value": 0, "chosen": len(chosen),
                           "passed": True,
                           "message": f"{record['file']} is int8 but for the {len(kept)} op{'s' if len(kept) != 1 else ''} "
                                      f"--accuracy-control kept in float on purpose ({', '.join(o['layer'] for o in kept[:6])}"
                                      f"{', ...' if len(kept) > 6 else ''})"})
            continue
        ops = [o for o in ops if not o.get("chosen")]
        if not ops:
            checks.append({"name": "full_integer", "artifact": record["file"], "value": 0, "passed": True,
                           "message": f"{record['file']} is full-integer: no op computes in float"})
            continue
        listed = ", ".join(f"#{o['index']} {o['op']}" for o in ops[:12]) + (f", ... ({len(ops)} ops)" if len(ops) > 12 else "")
        checks.append({
            "name": "full_integer", "artifact": record["file"], "value": len(ops), "passed": options.allow_float_ops,
            "message": (f"{record['file']} computes {len(ops)} ops in float: {listed}"
                        + ("; accepted with --allow-float-ops" if options.allow_float_ops else
                           "; those ops have no int8 kernel here (replace them, or pass --allow-float-ops to accept "
                           "a partly float model, which the Edge TPU and int8-only accelerators cannot run)")),
        })
    return checks


def _verify_all(ctx, target_impl, artifacts, records, ref) -> dict[str, Any] | None:
    """Verify each artifact that has a host runtime against the float reference; return the primary
    (first verified) one's result. Each verified record is marked ``verified``."""
    from edgec.verify import compare, run_batched

    primary = None
    for art, record in zip(artifacts, records, strict=True):
        if not art.verify_with:
            continue
        runner = target_impl.runner(ctx.workdir / art.file, ctx)
        with ctx.progress.task(f"verify: {art.file} ({art.verify_with})", total=len(ref.data)) as task:
            outs = run_batched(runner, ref.data.x, 64, task)
        result = compare(ref, outs, runner.output_names)
        result.update(runtime=art.verify_with, artifact=art.file)
        record["verification"] = result
        record["verified"] = True
        if result["reordered_outputs"]:
            log.warning("%s keeps its outputs in another order than the model: %s", art.file,
                        ", ".join(f"{o['name']} -> index {o['index']}" for o in result["outputs"]))
        primary = primary or result
    return primary


def _optimization_report(ctx, target_impl, artifacts, records, optimized, representative,
                         float_tflite) -> dict[str, Any]:
    """The manifest's ``optimization`` section, read from the verified .tflite artifact."""
    from edgec.model_io import output_specs
    from edgec.optimize import finish
    from edgec.verify import run_batched

    index = next((i for i, (a, r) in enumerate(zip(artifacts, records, strict=True))
                  if a.format == "tflite" and a.verify_with), None)
    path = ctx.workdir / artifacts[index].file if index is not None else None
    accuracy = None
    if path is not None:
        verified = records[index].get("verification") or {}
        if "artifact_accuracy" in verified and ctx.eval is not None and optimized.accuracy_x is ctx.eval.x:
            accuracy = verified["artifact_accuracy"]
        else:
            runner = target_impl.runner(path, ctx)
            out = run_batched(runner, optimized.accuracy_x, 64)
            name = output_specs(ctx.float_model)[0].name  # compression needs a single-output classifier
            got = out[runner.output_names.index(name)]
            accuracy = float((got.reshape(len(got), -1).argmax(axis=1) == optimized.accuracy_y).mean())
    return finish(optimized, ctx.float_model, path, artifact_accuracy=accuracy, artifact_precision=ctx.precision.value,
                  representative=representative, progress=ctx.progress,
                  float_tflite=float_tflite() if path is not None else None)
