"""One target's build (the target's artifacts, their verification, the compression report, the
checks and the manifest, written atomically) in a :class:`BuildSession` that keeps the stages that
do not depend on the target: the loaded model and data, the float reference, the compression
fine-tune per QAT scheme, so a build for several targets runs them once."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from edgec import manifest as manifest_mod
from edgec.config import Precision
from edgec.errors import CheckFailed, EdgecError
from edgec.pipeline.checks import build_checks, record_artifact
from edgec.pipeline.inputs import Inputs, check_labelled, prepare_inputs
from edgec.pipeline.validate import BuildPlan
from edgec.progress import Progress
from edgec.util import atomic_dir

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
        check_labelled(request, data)
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
            records = [record_artifact(work, art, precision) for art in artifacts]

            verification = None
            if data.reference is not None:
                t0 = time.perf_counter()
                verification = verify_all(ctx, target_impl, artifacts, records, data.reference)
                timings["verify"] = time.perf_counter() - t0

            optimization = None
            if optimized is not None:
                t0 = time.perf_counter()
                optimization = optimization_report(ctx, target_impl, artifacts, records, optimized, representative,
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


def verify_all(ctx, target_impl, artifacts, records, ref) -> dict[str, Any] | None:
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


def optimization_report(ctx, target_impl, artifacts, records, optimized, representative,
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
