"""Typed build configuration: frozen dataclasses and str enums spelled as on the command line."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any


class Precision(enum.StrEnum):
    """Numeric precision of an artifact."""

    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC = "dynamic"  # int8 weights, float activations (dynamic-range quantization)
    INT8 = "int8"  # full-integer: weights and activations int8, calibrated

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
        eval: labelled data used to verify the artifact against the float model.
        max_accuracy_drop: budget in accuracy points; a larger drop fails the build (exit 1).
        out: output root; artifacts go to ``out/<profile id>``.
        require_compiler: fail (exit 1) when a target's device compiler (edgetpu_compiler) cannot
            run, instead of writing the compiler-ready artifact and the command to finish.
    """

    precision: Precision | None = None
    calib: str | None = None
    calib_samples: int = 200
    seed: int = 0
    eval: str | None = None
    max_accuracy_drop: float | None = None
    out: Path = Path("dist")
    require_compiler: bool = False

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
