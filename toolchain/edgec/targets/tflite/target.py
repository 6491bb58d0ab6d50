"""TFLite target: TFLiteConverter -> model.tflite (fp32 | fp16 | dynamic | int8), run by LiteRT."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgec.config import BuildOptions, Precision
from edgec.errors import EdgecError
from edgec.progress import Progress
from edgec.targets.base import Artifact, BuildContext, Target
from edgec.targets.schema import Profile
from edgec.targets.tflite.litert import LiteRTRunner, artifact_info, convert


class TFLiteTarget(Target):
    """CPU devices running LiteRT (Raspberry Pi, x86, Arm boards)."""

    kind = "tflite"
    runtime = "litert"
    sparse_kernels = True
    accuracy_control = True
    remedies = ("equalize", "bias_correct", "range", "adaround", "int16")
    remedies_analyzed = True

    def check_kind(self, profile: Profile, precision: Precision, options: BuildOptions) -> None:
        if precision.needs_calibration and not options.has_representative_data:
            raise EdgecError(
                f"precision int8 needs representative data: pass --calib DATA "
                f"(.npz, .npy, image folder or module:function), or --qat with --fine-tune DATA, or choose one of "
                f"{', '.join(p for p in profile.precisions if p != 'int8') or 'no other precision'}"
            )

    def write(self, ctx: BuildContext) -> list[Artifact]:
        path = ctx.workdir / "model.tflite"
        chosen: dict[str, Any] = {}
        if ctx.precision is Precision.INT8 and ctx.int8 is not None and ctx.int8.wanted(ctx):
            content, chosen = ctx.int8.tflite_artifact(ctx, path.name)
        else:
            content = convert(ctx.model, ctx.precision, calib=ctx.calib, io_dtype=ctx.profile.int8_io,
                              progress=ctx.progress, output_names=ctx.output_names,
                              sparsity=ctx.options.sparse_inference)
        path.write_bytes(content)
        return [Artifact(file=path.name, role="model", format="tflite", precision=ctx.precision.value,
                         verify_with="litert", info={**artifact_info(path), **chosen})]

    def runner(self, path: Path, ctx: BuildContext | None = None):
        threads = ctx.profile.threads if ctx is not None and ctx.profile.threads else None
        return LiteRTRunner(path, threads=min(threads or os.cpu_count() or 1, os.cpu_count() or 1))

    def accuracy_backend(self, profile: Profile, model, calib, *, progress: Progress | None = None,
                         threads: int = 1, batch_size: int | None = None):
        """TFLite selective quantization (:class:`edgec.targets.tflite.accuracy.TFLiteBackend`)."""
        from edgec.model_io import output_specs
        from edgec.targets.tflite.accuracy import TFLiteBackend

        return TFLiteBackend(model, calib, io_dtype=profile.int8_io, batch_size=batch_size,
                             output_names=[o.name for o in output_specs(model)], threads=threads, progress=progress)

    def float_ops(self, path: Path, fmt: str) -> list[dict[str, Any]] | None:
        """Every op with a float activation, besides the conversions of float model inputs and outputs."""
        if fmt != "tflite":
            return None
        from edgec import tflite_model

        return tflite_model.float_ops(tflite_model.load(path))

    def mark_chosen(self, path: Path, fmt: str, float_ops: list[dict[str, Any]],
                    chosen: list[dict[str, str]]) -> list[dict[str, Any]] | None:
        if fmt != "tflite":
            return None
        from edgec.targets.tflite.accuracy import chosen_float_ops

        return chosen_float_ops(path, float_ops, chosen)
