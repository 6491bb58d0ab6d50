"""What to optimize, resolved from the build options and checked before TensorFlow is imported."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from edgec.config import BuildOptions, Precision
from edgec.errors import EdgecError, choices

DEFAULT_TEMPERATURE = 4.0
DEFAULT_LR = 1e-3  # Adam, for the steps that recover from compression
QAT_ALONE_LR = 1e-4  # Adam, for quantization-aware training with no step before it
STRUCTURAL_LR = 3e-3  # Adam, for channel surgery and low-rank: a cut model starts far from its optimum
STRUCTURAL_STEPS = ("channels", "low_rank")
DEFAULT_EPOCHS = 10  # fine-tuning epochs per step
# channel surgery and low-rank start from a model far from its optimum: at 10 epochs the
# separable digits net's loss was still falling at the last epoch (bench/bench_recovery.py)
STRUCTURAL_EPOCHS = 20
STRUCTURES = {"2:4": (2, 4)}  # name -> (zeros, group size), as TF-MOT's sparsity_m_by_n
MAX_CLUSTERS = 256  # an int8 kernel cannot hold more distinct values
CHANNEL_CRITERIA = ("l1", "l2", "bn")  # kernel norm per output channel, or |gamma| of the BatchNorm after
# |gamma| by default: a BatchNorm after the layer rescales each channel, so the kernel's norm says
# little about what the channel contributes (Network Slimming); layers without one are ranked by L1
DEFAULT_CHANNEL_CRITERION = "bn"
SPARSE_MIN_SPARSITY = 2 / 3  # XNNPACK takes its sparse path only when this share of the 1x1 weights is zero
SPARSE_DEFAULT_SPARSITY = 0.75
SPARSE_PRECISIONS = (Precision.FP32, Precision.FP16)  # XNNPACK's sparse kernels are float kernels
#: the levels ``--prune auto`` / ``--prune-channels auto`` choose from (bisection, lowest first)
AUTO_LEVELS = {"prune": (0.5, 0.6, 0.7, 0.8, 0.9), "prune_channels": (0.25, 0.375, 0.5, 0.625, 0.75)}


class PruneSchedule(enum.StrEnum):
    """How sparsity grows during pruning."""

    POLYNOMIAL = "polynomial"  # Zhu & Gupta: from 0 to the target over the first half of the epochs
    CONSTANT = "constant"  # the target sparsity from the first step


@dataclasses.dataclass(frozen=True)
class OptimizeSpec:
    """The compression steps of one build, in the order they run: channels, low-rank, prune,
    cluster, QAT."""

    prune: float | None
    prune_schedule: PruneSchedule | None
    prune_structure: tuple[int, int] | None
    cluster: int | None
    qat: bool
    qat_skip: tuple[str, ...]
    distill: bool
    temperature: float
    distill_weight: float
    epochs: int | None  # None: each step's default (:meth:`epochs_for`)
    batch_size: int
    lr: float | None  # None: each step's default (:meth:`learning_rate`)
    seed: int
    prune_channels: float | None = None
    channel_criterion: str = "l1"
    low_rank: float | None = None
    low_rank_energy: float | None = None
    sparse_inference: bool = False
    auto: str | None = None  # "prune" or "prune_channels": searched within ``max_accuracy_drop`` (auto.py)
    max_accuracy_drop: float | None = None

    @property
    def pruning(self) -> bool:
        return self.prune is not None

    @property
    def low_ranking(self) -> bool:
        return self.low_rank is not None or self.low_rank_energy is not None

    def learning_rate(self, step: str) -> float:
        """The step's learning rate: ``--lr`` when given, else :data:`DEFAULT_LR`, except for QAT
        as the only step or after channel surgery and low-rank alone (they end converged, at the
        bottom of their own decay), which adapts a trained model to int8 rounding and starts at
        :data:`QAT_ALONE_LR` (the larger rate pulls a converged BatchNorm model away from its
        optimum in the first epoch; the separable digits net's ``--prune-channels 0.5 --qat`` lost
        1.26 points at one of five seeds at 1e-3, at most 0.76 at 1e-4), and channel surgery and
        low-rank, which rebuild the layers and
        start from a model far from its optimum: :data:`STRUCTURAL_LR` (it is reached after the
        warm-up epoch; :func:`edgec.optimize.train.lr_schedule`)."""
        if self.lr is not None:
            return self.lr
        if step in STRUCTURAL_STEPS:
            return STRUCTURAL_LR
        converged = set(self.steps) <= {"qat", *STRUCTURAL_STEPS}
        return QAT_ALONE_LR if step == "qat" and converged else DEFAULT_LR

    def epochs_for(self, step: str) -> int:
        """The step's fine-tuning epochs: ``--epochs`` when given, else :data:`DEFAULT_EPOCHS`, and
        :data:`STRUCTURAL_EPOCHS` for channel surgery and low-rank, which rebuild the layers."""
        if self.epochs is not None:
            return self.epochs
        return STRUCTURAL_EPOCHS if step in STRUCTURAL_STEPS else DEFAULT_EPOCHS

    @property
    def steps(self) -> list[str]:
        return [name for name, on in (("channels", self.prune_channels is not None), ("low_rank", self.low_ranking),
                                      ("prune", self.pruning), ("cluster", self.cluster is not None),
                                      ("qat", self.qat)) if on]

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "prune": None if not self.pruning else {
                "sparsity": self.prune,
                "schedule": self.prune_schedule.value if self.prune_schedule else None,
                "structure": f"{self.prune_structure[0]}:{self.prune_structure[1]}" if self.prune_structure else None,
            },
            "channels": None if self.prune_channels is None else {"fraction": self.prune_channels,
                                                                   "criterion": self.channel_criterion},
            "low_rank": None if not self.low_ranking else {"rank_fraction": self.low_rank,
                                                           "energy": self.low_rank_energy},
            "sparse_inference": None if not self.sparse_inference else {
                "pruning_policy": "PruneForLatencyOnXNNPack", "converter": "EXPERIMENTAL_SPARSITY"},
            "cluster": None if self.cluster is None else {"clusters": self.cluster},
            "qat": None if not self.qat else {"skip": list(self.qat_skip)},
            "distill": None if not self.distill else {"temperature": self.temperature,
                                                      "weight": self.distill_weight},
            "auto": None if self.auto is None else {"option": "--" + self.auto.replace("_", "-"),
                                                    "max_accuracy_drop": self.max_accuracy_drop},
            "fine_tune": {"epochs": {step: self.epochs_for(step) for step in self.steps}, "batch_size": self.batch_size,
                          "lr": {step: self.learning_rate(step) for step in self.steps},
                          "optimizer": "adam", "seed": self.seed},
        }


def resolve(options: BuildOptions, precision: Precision) -> OptimizeSpec | None:
    """Check the compression options and resolve defaults; ``None`` when nothing is requested.

    Raises:
        EdgecError: contradictory or out-of-range options, or a step without fine-tune data.
    """
    o = options
    _check_pairs(o)
    if not o.optimizing:
        _check_nothing_to_fine_tune(o)
        return None
    requested = " ".join(f for f, on in (
        ("--prune-channels", o.prune_channels is not None),
        ("--low-rank", o.low_rank is not None), ("--low-rank-energy", o.low_rank_energy is not None),
        ("--sparse-inference", o.sparse_inference),
        ("--prune", o.prune is not None), ("--prune-structure", bool(o.prune_structure)),
        ("--cluster", o.cluster is not None), ("--qat", o.qat)) if on)
    auto = _auto(o)
    if auto is not None:  # a placeholder level; the search replaces it (edgec.optimize.auto)
        o = dataclasses.replace(o, **{auto: AUTO_LEVELS[auto][-1]})
    channels, criterion = _channels(o)
    low_rank, low_rank_energy = _low_rank(o)
    prune, structure = _prune(o)
    if o.sparse_inference:
        prune = _sparse_inference(o, precision, prune, structure, low_rank is not None or low_rank_energy is not None)
    schedule = _schedule(o, prune, structure)
    _check_training(o, precision, requested)
    temperature = DEFAULT_TEMPERATURE if o.temperature is None else float(o.temperature)
    if not temperature > 0:
        raise EdgecError(f"--temperature must be positive, got {o.temperature}")
    if not 0.0 <= o.distill_weight <= 1.0:
        raise EdgecError(f"--distill-weight is the share of the loss from the teacher: expected 0..1, got {o.distill_weight}")
    return OptimizeSpec(
        prune=prune, prune_schedule=schedule, prune_structure=structure, cluster=o.cluster, qat=bool(o.qat),
        qat_skip=tuple(o.qat_skip), distill=default_distill(o, channels, low_rank, low_rank_energy), temperature=temperature,
        distill_weight=float(o.distill_weight), epochs=None if o.epochs is None else int(o.epochs),
        batch_size=int(o.batch_size),
        lr=None if o.lr is None else float(o.lr),
        seed=int(o.seed), prune_channels=channels, channel_criterion=criterion, low_rank=low_rank,
        low_rank_energy=low_rank_energy, sparse_inference=bool(o.sparse_inference), auto=auto,
        max_accuracy_drop=None if auto is None else float(o.max_accuracy_drop),
    )


def _check_pairs(o: BuildOptions) -> None:
    """Options that only mean something beside another one."""
    if o.qat_skip and not o.qat:
        raise EdgecError(f"--qat-skip {' '.join(o.qat_skip)} only applies with --qat; add --qat or drop --qat-skip")
    if o.temperature is not None and o.distill is False:
        raise EdgecError("--temperature sets the distillation temperature; drop --no-distill or --temperature")
    if o.prune_schedule is not None and o.prune is None and not o.prune_structure and not o.sparse_inference:
        raise EdgecError(f"--prune-schedule {o.prune_schedule} needs --prune SPARSITY")
    if o.channel_criterion is not None and o.prune_channels is None:
        raise EdgecError(f"--channel-criterion {o.channel_criterion} ranks channels for --prune-channels; "
                         "add --prune-channels FRACTION or drop --channel-criterion")


def _check_nothing_to_fine_tune(o: BuildOptions) -> None:
    """Without a compression step, the fine-tuning options have nothing to act on."""
    if o.distill:
        raise EdgecError("--distill recovers accuracy while compressing; add --prune, --cluster or --qat "
                         "(or --prune-channels, --low-rank)")
    if o.fine_tune:
        raise EdgecError("--fine-tune data is used by the compression steps; add --prune, --cluster or --qat "
                         "(or --prune-channels, --low-rank, --sparse-inference), or drop --fine-tune")


def _prune(o: BuildOptions) -> tuple[float | None, tuple[int, int] | None]:
    """The sparsity and the N:M structure of ``--prune`` / ``--prune-structure``."""
    prune = o.prune
    if prune is not None:
        if not isinstance(prune, (int, float)) or not 0.0 < float(prune) < 1.0:
            hint = f"; did you mean {float(prune) / 100:g}?" if isinstance(prune, (int, float)) and 1 < prune < 100 else ""
            raise EdgecError(f"--prune is the share of weights set to zero: expected 0 < SPARSITY < 1, got {prune}{hint}")
        prune = float(prune)
    if not o.prune_structure:
        return prune, None
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
    return fixed, structure


def _schedule(o: BuildOptions, prune: float | None, structure) -> PruneSchedule | None:
    """The schedule of unstructured pruning (none for N:M masks, set at the first step)."""
    if prune is None or structure is not None:
        return None
    raw = o.prune_schedule or PruneSchedule.POLYNOMIAL.value
    try:
        return PruneSchedule(raw)
    except ValueError:
        raise EdgecError(f"unknown --prune-schedule '{raw}'; valid: {choices(s.value for s in PruneSchedule)}") from None


def _check_training(o: BuildOptions, precision: Precision, requested: str) -> None:
    """Clustering, QAT and the fine-tuning options, and the labelled data they train on."""
    if o.cluster is not None:
        if isinstance(o.cluster, bool) or not isinstance(o.cluster, int) or not 2 <= o.cluster <= MAX_CLUSTERS:
            raise EdgecError(f"--cluster is the number of shared values per kernel: expected 2..{MAX_CLUSTERS}, got {o.cluster}")
    if o.qat and precision is not Precision.INT8:
        raise EdgecError(f"--qat trains the model for int8 inference, but this build's precision is {precision.value}; "
                         "pass --precision int8 or drop --qat")
    if o.epochs is not None and o.epochs < 1:
        raise EdgecError(f"--epochs must be at least 1, got {o.epochs}")
    if o.batch_size < 1:
        raise EdgecError(f"--batch-size must be at least 1, got {o.batch_size}")
    if o.lr is not None and not o.lr > 0:
        raise EdgecError(f"--lr must be positive, got {o.lr}")
    if not o.fine_tune:
        raise EdgecError(
            f"{requested} fine-tune the model and need labelled data: pass --fine-tune DATA "
            "(.npz with arrays x and y, a folder with one sub-folder per class, or module:function yielding (x, y))"
        )


def default_distill(o: BuildOptions, channels, low_rank, low_rank_energy) -> bool:
    """``--distill``/``--no-distill`` as given; by default on when the build cuts the architecture.

    Channel surgery and low-rank factorization change what every later layer sees, and the
    float model's soft targets recover them better than the labels alone (separable digits net,
    ``--prune-channels 0.5``, five seeds: 0.50-1.01 pt drop with the teacher, 1.5 pt at seed 0
    without). Weight pruning, clustering and QAT keep the architecture; on them the teacher
    slowed recovery within the default epochs (digits CNN, ``--prune 0.8 --qat``, seeds 0-3:
    0.93-1.67 pt with it, 0.19-0.56 pt without), so they train on the labels unless asked.
    """
    if o.distill is not None:
        return bool(o.distill)
    if o.temperature is not None:  # a temperature asks for the teacher
        return True
    return channels is not None or low_rank is not None or low_rank_energy is not None


def _auto(o: BuildOptions) -> str | None:
    """Which option is ``auto`` (``prune`` or ``prune_channels``), checked; ``None`` when neither.

    Raises:
        EdgecError: ``auto`` for both, with a fixed structure, without a budget or eval data.
    """
    wanted = [name for name in AUTO_LEVELS if getattr(o, name) == "auto"]
    for name in ("prune", "prune_channels"):
        value = getattr(o, name)
        if isinstance(value, str) and value != "auto":
            raise EdgecError(f"--{name.replace('_', '-')} takes a number or 'auto', got '{value}'")
    if not wanted:
        return None
    flag = "--" + wanted[0].replace("_", "-")
    if len(wanted) > 1:
        raise EdgecError("--prune auto and --prune-channels auto each search a level against the budget; "
                         "search one of them (give the other a number)")
    if o.max_accuracy_drop is None:
        raise EdgecError(f"{flag} auto searches the highest level within an accuracy budget: "
                         "add --max-accuracy-drop POINTS")
    if not o.max_accuracy_drop > 0:
        raise EdgecError(f"{flag} auto needs a positive --max-accuracy-drop, got {o.max_accuracy_drop:g}")
    if not o.eval:
        raise EdgecError(f"{flag} auto measures the accuracy drop of each level on labelled eval data: "
                         "add --eval DATA (.npz with arrays x and y)")
    if wanted[0] == "prune" and (o.prune_structure or o.sparse_inference):
        raise EdgecError("--prune auto searches unstructured sparsity; drop --prune-structure / --sparse-inference "
                         "or give --prune a number")
    return wanted[0]


def _share(flag: str, what: str, value, name: str) -> float:
    """``value`` as a float strictly between 0 and 1, or a one-line error naming ``flag``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        hint = f"; did you mean {float(value) / 100:g}?" if isinstance(value, (int, float)) and 1 < value < 100 else ""
        raise EdgecError(f"{flag} is {what}: expected 0 < {name} < 1, got {value}{hint}")
    return float(value)


def _channels(o: BuildOptions) -> tuple[float | None, str]:
    criterion = o.channel_criterion or DEFAULT_CHANNEL_CRITERION
    if criterion not in CHANNEL_CRITERIA:
        raise EdgecError(f"unknown --channel-criterion '{criterion}'; valid: {choices(CHANNEL_CRITERIA)}")
    if o.prune_channels is None:
        return None, criterion
    return _share("--prune-channels", "the share of output channels removed per layer", o.prune_channels,
                  "FRACTION"), criterion


def _low_rank(o: BuildOptions) -> tuple[float | None, float | None]:
    if o.low_rank is not None and o.low_rank_energy is not None:
        raise EdgecError(f"--low-rank {o.low_rank:g} and --low-rank-energy {o.low_rank_energy:g} both choose the "
                         "rank of each factorized layer; pass one of them")
    rank = None if o.low_rank is None else _share(
        "--low-rank", "the share of each kernel's rank kept", o.low_rank, "RANK_FRACTION")
    energy = None if o.low_rank_energy is None else _share(
        "--low-rank-energy", "the share of each kernel's spectral energy kept", o.low_rank_energy, "E")
    return rank, energy


def _sparse_inference(o: BuildOptions, precision: Precision, prune: float | None, structure, low_rank: bool) -> float:
    """The sparsity of a --sparse-inference build (checked against what XNNPACK's sparse path takes)."""
    if precision not in SPARSE_PRECISIONS:
        raise EdgecError(f"--sparse-inference uses XNNPACK's sparse fp32/fp16 kernels, but this build's precision is "
                         f"{precision.value}; pass --precision fp32 or fp16, or drop --sparse-inference")
    if structure is not None:
        raise EdgecError(f"--prune-structure {o.prune_structure} and --sparse-inference both choose where the zeros go "
                         "(2:4 groups vs. unstructured 1x1 convolutions for XNNPACK); pass one of them")
    if low_rank:
        raise EdgecError("--low-rank splits convolutions into k x 1 and 1 x k layers, which XNNPACK's sparse "
                         "subgraph cannot hold; drop --low-rank or --sparse-inference")
    if prune is None:
        return SPARSE_DEFAULT_SPARSITY
    if prune < SPARSE_MIN_SPARSITY - 1e-9:
        raise EdgecError(f"--sparse-inference needs at least 2/3 of the 1x1 convolution weights to be zero for "
                         f"XNNPACK to use its sparse kernels; got --prune {prune:g} (pass 0.67 or more, default 0.75)")
    return prune


def check_target(spec: OptimizeSpec | None, target, profile_id: str) -> None:
    """Refuse steps the build's target cannot use (before TensorFlow loads).

    Args:
        target: the build's :class:`edgec.targets.base.Target` (its ``kind`` and ``sparse_kernels``);
            given only its kind's name, nothing is checked here: ``Target.check`` refuses the same
            request before any work.

    Raises:
        EdgecError: --sparse-inference for a target without sparse kernels (LiteRT on a CPU).
    """
    if isinstance(target, str):
        return
    if spec is not None and spec.sparse_inference and not target.sparse_kernels:
        raise EdgecError(sparse_refusal(target.kind, profile_id))


def sparse_refusal(kind: str, profile_id: str) -> str:
    """Why --sparse-inference cannot build for a target kind without sparse kernels."""
    return (f"--sparse-inference stores weights for XNNPACK's sparse kernels in LiteRT on CPU targets; "
            f"profile '{profile_id}' is a {kind} target: drop --sparse-inference")
