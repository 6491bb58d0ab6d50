"""Typed build configuration: frozen dataclasses and str enums spelled as on the command line."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any

from edgec.agent import vocab


class Precision(enum.StrEnum):
    """Numeric precision of an artifact."""

    FP32 = vocab.FP32
    FP16 = vocab.FP16
    DYNAMIC = vocab.DYNAMIC  # int8 weights, float activations (dynamic-range quantization)
    INT8 = vocab.INT8  # full-integer: weights and activations int8, calibrated

    @property
    def needs_calibration(self) -> bool:
        return self is Precision.INT8


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """Every knob of a build; all of it lands in manifest.json.

    Attributes:
        precision: artifact precision; ``None`` means the profile's default.
        calib: representative data for int8 calibration (path or ``module:function``).
        calib_samples: how many calibration samples to draw.
        seed: seed for sampling and any training, so builds are reproducible.
        eval: data used to verify the artifact against the float model (labels give accuracy).
        eval_output: the output the eval labels belong to; ``None`` means the single
            classification output (an error asks which when there are several).
        max_accuracy_drop: budget in accuracy points (:mod:`edgec.budgets`); a larger drop fails the
            build (exit 1).
        allow_float_ops: accept an int8 artifact that still computes some ops in float (they are
            listed either way); without it such a build fails (exit 1).
        accuracy_control: keep the fewest ops of the int8 artifact in float that bring the drop on
            ``eval`` within ``max_accuracy_drop`` (:mod:`edgec.accuracy`); those ops are marked as
            chosen, not counted as float-op errors.
        equalize: cross-layer equalization of the float model before int8 (:mod:`edgec.accuracy.remedies`).
        bias_correct: empirical bias correction of the int8 weights' error, from the calibration data.
        act_range: activation ranges of the int8 model: "minmax" (``None``), "percentile" or "mse".
        adaround: learned rounding of the int8 weights on the calibration data (AdaRound).
        int16_activations: 16-bit activations, int8 weights (TFLite 16x8) for the whole model.
        remedies: ``accuracy_control`` tries the integer remedies above before any op is left in
            float (``False``: float ops only).
        input_range: the range pixels map onto ("0,1", "-1,1", "0,255"); see
            :mod:`edgec.calibration.inputs` (``None``: inferred from the model, else [0, 1]).
        normalize: a per-channel normalization preset ("imagenet", "caffe") instead of a range.
        mean, std: per-channel normalization values instead of a range or a preset.
        out: output root; artifacts go to ``out/<profile id>``.
        require_compiler: fail (exit 1) when a target's device compiler (edgetpu_compiler) cannot
            run, instead of writing the compiler-ready artifact and the command to finish.
        fine_tune: labelled data for the compression steps (path or ``module:function``).
        epochs: fine-tuning epochs per compression step (early stopping may end a step sooner);
            ``None``: 10, and 20 for channel surgery and low-rank.
        batch_size: fine-tuning batch size.
        lr: fine-tuning learning rate (Adam) of every step; ``None``: 1e-3, and 1e-4 for QAT as the
            only step.
        prune: target share of zero weights in the pruned kernels, 0 < prune < 1, or "auto": the
            highest level within ``max_accuracy_drop`` on ``eval`` (:mod:`edgec.optimize.auto`).
        prune_schedule: "polynomial" (sparsity ramps up over the first half of the epochs) or
            "constant" (target sparsity from the first step); ``None`` means polynomial.
        prune_structure: "2:4" for structured pruning (2 zeros in every 4 weights along the
            input axis, sparsity 0.5), ``None`` for unstructured magnitude pruning.
        cluster: number of shared weight values (clusters) per kernel.
        qat: quantization-aware training for an int8 artifact.
        qat_skip: layer names left out of quantization-aware training on purpose.
        distill: fine-tune against the original float model as teacher; ``None`` means on with
            channel surgery or low-rank factorization, off otherwise (``False`` trains on the
            labels alone).
        temperature: softmax temperature of the teacher's soft targets; ``None`` means 4.
        distill_weight: share of the loss from the teacher's soft targets (the rest from labels).
        prune_channels: share of the output channels removed from each Conv/Dense layer (the
            layers are rebuilt smaller), 0 < prune_channels < 1, or "auto" (as ``prune``).
        channel_criterion: how channels are ranked for removal: "l1" or "l2" norm of their
            kernel, or "bn" (|gamma| of the BatchNormalization after the layer); ``None`` means l1.
        low_rank: SVD factorization keeping this share of each Conv/Dense kernel's rank.
        low_rank_energy: SVD factorization keeping the smallest rank whose singular values hold
            this share of the kernel's spectral energy (sum of squares).
        sparse_inference: prune 1x1 convolutions for XNNPACK's sparse fp32/fp16 kernels and
            store their weights sparse in the .tflite (CPU targets).
        custom_objects: modules or .py files that register custom layers, imported before the
            model is loaded.
    """

    precision: Precision | None = None
    calib: str | None = None
    calib_samples: int = 200
    seed: int = 0
    eval: str | None = None
    eval_output: str | None = None
    max_accuracy_drop: float | None = None
    allow_float_ops: bool = False
    accuracy_control: bool = False
    equalize: bool = False
    bias_correct: bool = False
    act_range: str | None = None
    adaround: bool = False
    int16_activations: bool = False
    remedies: bool = True
    input_range: str | None = None
    normalize: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    out: Path = Path("dist")
    require_compiler: bool = False
    fine_tune: str | None = None
    epochs: int | None = None
    batch_size: int = 32
    lr: float | None = None
    prune: float | str | None = None
    prune_schedule: str | None = None
    prune_structure: str | None = None
    cluster: int | None = None
    qat: bool = False
    qat_skip: tuple[str, ...] = ()
    distill: bool | None = None
    temperature: float | None = None
    distill_weight: float = 0.5
    prune_channels: float | str | None = None
    channel_criterion: str | None = None
    low_rank: float | None = None
    low_rank_energy: float | None = None
    sparse_inference: bool = False
    custom_objects: tuple[str, ...] = ()

    @property
    def optimizing(self) -> bool:
        """True when any compression step (channels, low-rank, prune, cluster, QAT) is requested."""
        return bool(self.prune is not None or self.prune_structure or self.cluster is not None or self.qat
                    or self.prune_channels is not None or self.low_rank is not None
                    or self.low_rank_energy is not None or self.sparse_inference)

    @property
    def has_representative_data(self) -> bool:
        """True when an int8 build has data to range its activations: ``--calib``, or the
        fine-tune inputs of a QAT build (QAT learned most ranges; they calibrate the rest)."""
        return bool(self.calib) or (self.qat and bool(self.fine_tune))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict of the options (enums as their CLI spelling, paths as strings)."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[field.name] = value
        return out
