"""What every target provides, and the context a build hands it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from edgec.calibration import Dataset
from edgec.config import BuildOptions, Precision
from edgec.profiles import Profile
from edgec.progress import Progress


class Int8Steps(Protocol):
    """What a target's int8 build asks of the int8 remedies and accuracy control
    (:mod:`edgec.accuracy.build`). They use the targets' converters, so they sit above the targets:
    the build pipeline hands them over in :attr:`BuildContext.int8`."""

    def wanted(self, ctx: BuildContext) -> bool:
        """Whether the build asked for remedies or accuracy control (else plain int8)."""

    def keras_model(self, ctx: BuildContext, model: Any = None) -> Any:
        """The model to convert, with the build's weight remedies applied."""

    def tflite_artifact(self, ctx: BuildContext, artifact: str) -> tuple[bytes, dict[str, Any]]:
        """The TFLite int8 model with remedies and the ops kept in float, and the record's additions."""

    def tensorrt_artifact(self, ctx: BuildContext, qdq: Any) -> tuple[Any, dict[str, Any]]:
        """The Q/DQ ONNX model without Q/DQ around the ops kept in float, and the record's additions."""


@dataclasses.dataclass
class BuildContext:
    """Everything a target's build needs; targets write only into ``workdir``."""

    profile: Profile
    options: BuildOptions
    precision: Precision
    model: Any  # the (optimized, stripped) tf-keras model to export
    float_model: Any  # the untouched float reference
    calib: Dataset | None
    eval: Dataset | None
    workdir: Path
    progress: Progress
    reference: Any = None  # verify.Reference: the float model's outputs on the eval data, when given
    out_dir: Path | None = None  # where the build directory lands (``workdir`` is moved there); None: OUT/PROFILE
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # target-specific manifest fields
    int8: Int8Steps | None = None  # remedies and accuracy control (None: plain int8 only)

    @property
    def final_dir(self) -> Path:
        """Where the build directory lands once complete (``workdir`` is moved there)."""
        return self.out_dir if self.out_dir is not None else Path(self.options.out) / self.profile.id

    @property
    def output_names(self) -> list[str]:
        """The model's output names, in its order: every artifact keeps both. Taken from the float
        model (the compression steps wrap layers and rename them, not the outputs)."""
        from edgec.model_io import output_specs

        return [o.name for o in output_specs(self.float_model)]


@dataclasses.dataclass
class Artifact:
    """One file a target wrote into the build directory."""

    file: str  # name relative to the build directory
    role: str  # "model", "edgetpu_model", "onnx", "engine", "report", ...
    format: str  # "tflite", "onnx", "engine", "json"
    precision: str | None = None
    verify_with: str | None = None  # host runtime that can run it ("litert", "onnxruntime") or None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)  # I/O, op counts, ...


class Target:
    """Base class of a target kind."""

    kind: ClassVar[str]
    #: runtime the device agent uses for the primary artifact
    runtime: ClassVar[str]
    #: the device compiler a build runs when the host has it (``--require-compiler``), if any
    device_compiler: ClassVar[str | None] = None

    def check(self, profile: Profile, precision: Precision, options: BuildOptions) -> None:
        """Reject an impossible request before any heavy work (raise EdgecError)."""

    def qat_scheme(self, profile: Profile):
        """The TF-MOT QuantizeScheme quantization-aware training should use for this target.

        ``None`` means TF-MOT's default 8-bit scheme (what TFLite and the Edge TPU run). A target
        whose runtime needs another scheme (TensorRT: symmetric activations) returns its own.
        """
        return None

    def build(self, ctx: BuildContext) -> list[Artifact]:
        """Write the artifacts into ``ctx.workdir``; the first one is the primary artifact."""
        raise NotImplementedError

    def runner(self, path: Path, ctx: BuildContext | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
        """A host callable running the artifact on float inputs and returning its float outputs in
        the artifact's order; its ``output_names`` attribute names them in that order."""
        raise NotImplementedError
