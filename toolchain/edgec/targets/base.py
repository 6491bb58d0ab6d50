"""What every target kind provides, and the context a build hands it.

A kind is one :class:`Target` subclass: its build and host runner, and everything else edgec knows
of the kind: the profile table it reads (:attr:`Target.section`), its accuracy backend
(:meth:`Target.accuracy_backend`), its search-space defaults (:attr:`Target.space`), what of a
build ships to a device with which runtime (:meth:`Target.shipment`) and the figures its budgets
read (:attr:`Target.budgets`, :meth:`Target.figures`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from edgec.budgets import Budget
from edgec.calibration import Dataset
from edgec.config import BuildOptions, Precision
from edgec.errors import EdgecError
from edgec.optimize.spec import sparse_refusal
from edgec.progress import Progress
from edgec.targets.quant import Backend
from edgec.targets.schema import Profile, Spec


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
    #: the table this kind's profiles carry, and its schema; ``None``: the kind reads none
    section: ClassVar[tuple[str, Spec] | None] = None
    #: whether --sparse-inference's sparse weights reach sparse kernels here (LiteRT on a CPU)
    sparse_kernels: ClassVar[bool] = False
    #: whether ``edgec build --accuracy-control`` builds for this kind (with :meth:`accuracy_backend`)
    accuracy_control: ClassVar[bool] = False
    #: the kind's defaults of the search space, replacing the common ones of the same name
    #: (TOML-style raw values, as in a space file's ``[space]`` table)
    space: ClassVar[dict[str, Any]] = {}
    #: budgets only this kind's builds have, read from :meth:`figures`
    budgets: ClassVar[tuple[Budget, ...]] = ()
    #: the integer remedies for int8 accuracy this kind's int8 artifact can carry
    #: (:mod:`edgec.accuracy.remedies`: ``equalize``, ``bias_correct``, ``range``, ``adaround``,
    #: ``int16``), and why it cannot carry each of the others
    remedies: ClassVar[tuple[str, ...]] = ()
    remedies_refused: ClassVar[dict[str, str]] = {}
    #: whether ``edgec analyze`` measures each remedy alone on this kind's int8 model (a TFLite one)
    remedies_analyzed: ClassVar[bool] = False

    def analysis_notes(self, profile: Profile, remedies: bool) -> list[str]:
        """What ``edgec analyze`` adds to its notes for this kind (``remedies``: they were asked for)."""
        return []

    def check(self, profile: Profile, precision: Precision, options: BuildOptions) -> None:
        """Reject an impossible request before any heavy work: the common refusals, then the
        kind's own (:meth:`check_kind`).

        Raises:
            EdgecError: the request cannot build for this kind.
        """
        if getattr(options, "sparse_inference", False) and not self.sparse_kernels:
            raise EdgecError(sparse_refusal(self.kind, profile.id))
        self.check_kind(profile, precision, options)

    def check_kind(self, profile: Profile, precision: Precision, options: BuildOptions) -> None:
        """The kind's own refusals (raise EdgecError)."""

    def qat_scheme(self, profile: Profile):
        """The TF-MOT QuantizeScheme quantization-aware training should use for this target.

        ``None`` means TF-MOT's default 8-bit scheme (what TFLite and the Edge TPU run). A target
        whose runtime needs another scheme (TensorRT: symmetric activations) returns its own.
        """
        return None

    def build(self, ctx: BuildContext) -> list[Artifact]:
        """Write the artifacts into ``ctx.workdir`` (:meth:`write`) and record in the manifest
        what of them ships to a device (``shipment``, :meth:`shipment`)."""
        artifacts = self.write(ctx)
        ctx.extra["shipment"] = self.shipment(ctx.workdir, artifacts)
        return artifacts

    def write(self, ctx: BuildContext) -> list[Artifact]:
        """Write the artifacts into ``ctx.workdir``; the first one is the primary artifact."""
        raise NotImplementedError

    def runner(self, path: Path, ctx: BuildContext | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
        """A host callable running the artifact on float inputs and returning its float outputs in
        the artifact's order; its ``output_names`` attribute names them in that order."""
        raise NotImplementedError

    def shipment(self, workdir: Path, artifacts: list[Artifact]) -> dict[str, dict[str, Any]]:
        """What of the build goes to a device, per runtime asked for: runtime -> ``files`` (name on
        the device -> file of the build directory), ``optional`` (the same, shipped when present),
        ``run`` (what the agent is given), ``runtime`` (what runs it) and ``warning`` (or None).
        A runtime not listed gets the primary artifact (:mod:`edgec.shipment`).

        Default: the primary artifact, run by the kind's runtime.
        """
        primary = artifacts[0].file
        return {self.runtime: {"files": {primary: primary}, "run": primary, "runtime": self.runtime}}

    def accuracy_backend(self, profile: Profile, model: Any, calib: Any, *, progress: Progress | None = None,
                         threads: int = 1) -> Backend | None:
        """The kind's int8 quantization of ``model`` with any ops left in float (``edgec analyze``
        and accuracy control), or ``None`` when the kind has none."""
        return None

    def accuracy_control_refusal(self, profile: Profile) -> str | None:
        """Why --accuracy-control cannot build for this kind, in the kind's own words (``None``:
        the common message)."""
        return None

    def float_ops(self, path: Path, fmt: str) -> list[dict[str, Any]] | None:
        """The ops of an int8 artifact of this kind's ``fmt`` that still compute in float (empty when
        full-integer); ``None`` when the format is not this kind's."""
        return None

    def mark_chosen(self, path: Path, fmt: str, float_ops: list[dict[str, Any]],
                    chosen: list[dict[str, str]]) -> list[dict[str, Any]] | None:
        """``float_ops`` with the ones accuracy control kept in float marked ``"chosen": true``;
        ``None`` when the format is not this kind's."""
        return None

    def figures(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """The kind's figures of a build (what :attr:`budgets` read), from its manifest."""
        return {}
