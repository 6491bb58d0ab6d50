"""What to optimize, resolved from the build options and checked before TensorFlow is imported."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from edgec.config import BuildOptions, Precision
from edgec.errors import EdgecError, choices

DEFAULT_TEMPERATURE = 4.0
STRUCTURES = {"2:4": (2, 4)}  # name -> (zeros, group size), as TF-MOT's sparsity_m_by_n
MAX_CLUSTERS = 256  # an int8 kernel cannot hold more distinct values


class PruneSchedule(enum.StrEnum):
    """How sparsity grows during pruning."""

    POLYNOMIAL = "polynomial"  # Zhu & Gupta: from 0 to the target over the first half of the epochs
    CONSTANT = "constant"  # the target sparsity from the first step


@dataclasses.dataclass(frozen=True)
class OptimizeSpec:
    """The compression steps of one build, in the order they run: prune, cluster, QAT."""

    prune: float | None
    prune_schedule: PruneSchedule | None
    prune_structure: tuple[int, int] | None
    cluster: int | None
    qat: bool
    qat_skip: tuple[str, ...]
    distill: bool
    temperature: float
    distill_weight: float
    epochs: int
    batch_size: int
    lr: float
    seed: int

    @property
    def pruning(self) -> bool:
        return self.prune is not None

    @property
    def steps(self) -> list[str]:
        return [name for name, on in (("prune", self.pruning), ("cluster", self.cluster is not None),
                                      ("qat", self.qat)) if on]

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "prune": None if not self.pruning else {
                "sparsity": self.prune,
                "schedule": self.prune_schedule.value if self.prune_schedule else None,
                "structure": f"{self.prune_structure[0]}:{self.prune_structure[1]}" if self.prune_structure else None,
            },
            "cluster": None if self.cluster is None else {"clusters": self.cluster},
            "qat": None if not self.qat else {"skip": list(self.qat_skip)},
            "distill": None if not self.distill else {"temperature": self.temperature,
                                                      "weight": self.distill_weight},
            "fine_tune": {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                          "optimizer": "adam", "seed": self.seed},
        }


def resolve(options: BuildOptions, precision: Precision) -> OptimizeSpec | None:
    """Check the compression options and resolve defaults; ``None`` when nothing is requested.

    Raises:
        EdgecError: contradictory or out-of-range options, or a step without fine-tune data.
    """
    o = options
    if o.qat_skip and not o.qat:
        raise EdgecError(f"--qat-skip {' '.join(o.qat_skip)} only applies with --qat; add --qat or drop --qat-skip")
    if o.temperature is not None and not o.distill:
        raise EdgecError("--temperature sets the distillation temperature; add --distill or drop --temperature")
    if o.prune_schedule is not None and o.prune is None and not o.prune_structure:
        raise EdgecError(f"--prune-schedule {o.prune_schedule} needs --prune SPARSITY")
    if not o.optimizing:
        if o.distill:
            raise EdgecError("--distill recovers accuracy while compressing; add --prune, --cluster or --qat")
        if o.fine_tune:
            raise EdgecError("--fine-tune data is used by the compression steps; add --prune, --cluster or --qat, "
                             "or drop --fine-tune")
        return None
    requested = " ".join(f for f, on in (("--prune", o.prune is not None), ("--prune-structure", bool(o.prune_structure)),
                                          ("--cluster", o.cluster is not None), ("--qat", o.qat)) if on)
    prune = o.prune
    if prune is not None:
        if not isinstance(prune, (int, float)) or not 0.0 < float(prune) < 1.0:
            hint = f"; did you mean {float(prune) / 100:g}?" if isinstance(prune, (int, float)) and 1 < prune < 100 else ""
            raise EdgecError(f"--prune is the share of weights set to zero: expected 0 < SPARSITY < 1, got {prune}{hint}")
        prune = float(prune)
    structure = None
    if o.prune_structure:
        if o.prune_structure not in STRUCTURES:
            raise EdgecError(f"unknown --prune-structure '{o.prune_structure}'; valid: {choices(STRUCTURES)}")
        structure = STRUCTURES[o.prune_structure]
        fixed = structure[0] / structure[1]
        if prune is not None and abs(prune - fixed) > 1e-9:
            raise EdgecError(f"--prune-structure {o.prune_structure} sets the sparsity to {fixed:g}; "
                             f"drop --prune {prune:g} (or pass --prune {fixed:g})")
        if o.prune_schedule is not None:
            raise EdgecError(f"--prune-structure {o.prune_structure} sets its masks at the first training step; "
                             "--prune-schedule applies to unstructured --prune only")
        prune = fixed
    schedule = None
    if prune is not None and structure is None:
        raw = o.prune_schedule or PruneSchedule.POLYNOMIAL.value
        try:
            schedule = PruneSchedule(raw)
        except ValueError:
            raise EdgecError(f"unknown --prune-schedule '{raw}'; valid: {choices(s.value for s in PruneSchedule)}") from None

    if o.cluster is not None:
        if isinstance(o.cluster, bool) or not isinstance(o.cluster, int) or not 2 <= o.cluster <= MAX_CLUSTERS:
            raise EdgecError(f"--cluster is the number of shared values per kernel: expected 2..{MAX_CLUSTERS}, got {o.cluster}")
    if o.qat and precision is not Precision.INT8:
        raise EdgecError(f"--qat trains the model for int8 inference, but this build's precision is {precision.value}; "
                         "pass --precision int8 or drop --qat")
    if o.epochs < 1:
        raise EdgecError(f"--epochs must be at least 1, got {o.epochs}")
    if o.batch_size < 1:
        raise EdgecError(f"--batch-size must be at least 1, got {o.batch_size}")
    if not o.lr > 0:
        raise EdgecError(f"--lr must be positive, got {o.lr}")
    if not o.fine_tune:
        raise EdgecError(
            f"{requested} fine-tune the model and need labelled data: pass --fine-tune DATA "
            "(.npz with arrays x and y, a folder with one sub-folder per class, or module:function yielding (x, y))"
        )

    temperature = DEFAULT_TEMPERATURE if o.temperature is None else float(o.temperature)
    if not temperature > 0:
        raise EdgecError(f"--temperature must be positive, got {o.temperature}")
    if not 0.0 <= o.distill_weight <= 1.0:
        raise EdgecError(f"--distill-weight is the share of the loss from the teacher: expected 0..1, got {o.distill_weight}")
    return OptimizeSpec(
        prune=prune, prune_schedule=schedule, prune_structure=structure, cluster=o.cluster, qat=bool(o.qat),
        qat_skip=tuple(o.qat_skip), distill=bool(o.distill), temperature=temperature,
        distill_weight=float(o.distill_weight), epochs=int(o.epochs), batch_size=int(o.batch_size), lr=float(o.lr),
        seed=int(o.seed),
    )
