"""The search space: which build options a trial may take, with defaults per target kind and a
TOML file to override them. Checked before TensorFlow or Optuna load.

A space maps parameter names to one of:

* a list: one of these values (``precision = ["int8", "fp16"]``, ``cluster = ["none", 16, 32]``);
* a table ``{low, high, step?, log?}``: an integer range when ``low`` and ``high`` are integers,
  else a float range (``lr = {low = 1e-4, high = 3e-3, log = true}``);
* a single value: fixed, not searched (``epochs = 3``).

Known parameters (the compression part of a trial, in the order they are drawn):

=================== ==========================================================================
``precision``       the artifact's precision, among the profile's
``prune_structure`` ``"none"`` or ``"2:4"`` (then the sparsity is 0.5 and ``prune`` is not drawn)
``prune``           share of zero weights, 0 (no pruning) to below 1
``cluster``         ``"none"`` or shared values per kernel (2..256)
``quantization``    ``"qat"`` or ``"ptq"`` (int8 only; other precisions are post-training)
``epochs``          fine-tune epochs per step (only when a step fine-tunes)
``lr``              fine-tune learning rate (Adam)
``batch_size``      fine-tune batch size
``distill``         fine-tune against the float model as teacher (true/false)
=================== ==========================================================================

With ``--builder``: ``train_optimizer`` (adam, rmsprop, sgd), ``train_lr``, ``train_batch_size``
and ``train_epochs`` (the most epochs a trial trains; Hyperband's resource).

Any other name must be an ``edgec.build`` option (a field of :class:`edgec.config.BuildOptions`,
such as ``prune_schedule`` or ``temperature``): it is drawn for every trial and passed on as it
is, so options added to the build later are searchable without a change here.

The optional ``[hyperband]`` table sets ``min_resource`` (epochs at the first rung, default 1)
and ``reduction_factor`` (default 3).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import tomllib
from pathlib import Path
from typing import Any

from edgec import targets
from edgec.errors import EdgecError, choices

NONE = "none"
OPTIMIZERS = ("adam", "rmsprop", "sgd")
QUANTIZATION = ("qat", "ptq")
STRUCTURES = (NONE, "2:4")

#: drawn only when the trial compresses (a step fine-tunes)
FINE_TUNE_PARAMS = ("epochs", "lr", "batch_size", "distill")
TRAIN_PARAMS = ("train_optimizer", "train_lr", "train_batch_size", "train_epochs")
COMPRESSION_PARAMS = ("precision", "prune_structure", "prune", "cluster", "quantization")
KNOWN = COMPRESSION_PARAMS + FINE_TUNE_PARAMS + TRAIN_PARAMS
#: build options the search sets itself (data, output, seed, budgets): not searchable
OWNED = ("calib", "eval", "fine_tune", "out", "seed", "max_accuracy_drop", "qat", "precision")


@dataclasses.dataclass(frozen=True)
class Param:
    """One dimension: a choice among values, an int or float range, or a fixed value."""

    name: str
    kind: str  # "choice" | "int" | "float" | "fixed"
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False

    def suggest(self, trial, prefix: str = "") -> Any:
        """The value for ``trial`` (an Optuna trial); fixed values are not drawn."""
        name = prefix + self.name
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "choice":
            return self.values[0] if len(self.values) == 1 else trial.suggest_categorical(name, list(self.values))
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), step=self.step, log=self.log)

    @property
    def maximum(self) -> Any:
        """The largest value this dimension can take (Hyperband's maximum resource)."""
        if self.kind in ("int", "float"):
            return self.high
        return max(self.values)

    @property
    def searched(self) -> bool:
        return self.kind in ("int", "float") or (self.kind == "choice" and len(self.values) > 1)

    def to_json(self) -> Any:
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "choice":
            return list(self.values)
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.step is not None:
            out["step"] = self.step
        if self.log:
            out["log"] = True
        return out


@dataclasses.dataclass(frozen=True)
class Hyperband:
    """Successive-halving settings: the first rung's epochs and the share kept at each rung."""

    min_resource: int = 1
    reduction_factor: int = 3


@dataclasses.dataclass(frozen=True)
class Space:
    """A checked search space for one device profile."""

    params: dict[str, Param]
    hyperband: Hyperband
    source: str  # "defaults for <kind>" or the TOML file

    def __getitem__(self, name: str) -> Param:
        return self.params[name]

    def get(self, name: str) -> Param | None:
        return self.params.get(name)

    @property
    def extras(self) -> list[str]:
        """Build options outside the known parameters, passed through to ``edgec.build``."""
        return [n for n in self.params if n not in KNOWN]

    def to_json(self) -> dict[str, Any]:
        return {"params": {n: p.to_json() for n, p in self.params.items()},
                "hyperband": dataclasses.asdict(self.hyperband)}

    def canonical(self) -> str:
        """The space as canonical JSON: equal spaces give equal text (the study's identity)."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))


def defaults(profile, builder: bool = False) -> dict[str, Any]:
    """The default space of a profile's target kind, as TOML-style raw values: the common one with
    the kind's own defaults (:attr:`edgec.targets.base.Target.space`) replacing it by name.
    """
    raw: dict[str, Any] = {
        "precision": list(profile.precisions),
        "prune_structure": list(STRUCTURES),
        "prune": {"low": 0.0, "high": 0.9, "step": 0.1},
        "cluster": [NONE, 8, 16, 32, 64],
        "quantization": list(QUANTIZATION),
        "epochs": {"low": 2, "high": 10},
        "lr": {"low": 1e-4, "high": 3e-3, "log": True},
        "batch_size": 32,
        "distill": [False, True],
    }
    raw.update(copy.deepcopy(targets.target_class(profile.target).space))
    if builder:
        raw.update({"train_optimizer": ["adam", "rmsprop"], "train_lr": {"low": 1e-3, "high": 1e-2, "log": True},
                    "train_batch_size": [32, 64], "train_epochs": 27})
    return raw


def load(path: str | Path | None, profile, builder: bool = False) -> Space:
    """The default space of ``profile``'s kind, with the parameters of the TOML file at ``path``
    replacing the defaults of the same name.

    Raises:
        EdgecError: unreadable file, unknown table or key, a value out of range (the file and
            the key are named).
    """
    raw = defaults(profile, builder)
    hyperband: dict[str, Any] = {}
    source = f"defaults for {profile.target} ({profile.id})"
    if path is not None:
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text())
        except OSError as exc:
            raise EdgecError(f"cannot read search space '{path}': {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise EdgecError(f"search space '{path}' is not valid TOML: {exc}") from None
        unknown = set(doc) - {"space", "hyperband"}
        if unknown:
            raise EdgecError(f"{path}: unknown table(s) {choices(unknown)}; valid: hyperband, space")
        raw.update(doc.get("space", {}))
        hyperband = doc.get("hyperband", {})
        source = str(path)
    where = str(path) if path is not None else "the default space"
    if not builder:
        given = [n for n in TRAIN_PARAMS if path is not None and n in doc.get("space", {})]
        if given:
            raise EdgecError(f"{where}: {', '.join(given)} set(s) how a --builder model is trained; "
                             "pass --builder module:function or remove them")
        for name in TRAIN_PARAMS:
            raw.pop(name, None)
    params = {name: _param(name, value, where) for name, value in raw.items()}
    _check(params, profile, where)
    return Space(params=params, hyperband=_hyperband(hyperband, where), source=source)


def _hyperband(raw: dict[str, Any], where: str) -> Hyperband:
    unknown = set(raw) - {"min_resource", "reduction_factor"}
    if unknown:
        raise EdgecError(f"{where}: unknown key(s) {choices(unknown)} in [hyperband]; valid: min_resource, "
                         "reduction_factor")
    hb = Hyperband(**raw)
    if not isinstance(hb.min_resource, int) or isinstance(hb.min_resource, bool) or hb.min_resource < 1:
        raise EdgecError(f"{where}: hyperband.min_resource must be an integer >= 1, got {hb.min_resource!r}")
    if not isinstance(hb.reduction_factor, int) or isinstance(hb.reduction_factor, bool) or hb.reduction_factor < 2:
        raise EdgecError(f"{where}: hyperband.reduction_factor must be an integer >= 2, got {hb.reduction_factor!r}")
    return hb


def _param(name: str, value: Any, where: str) -> Param:
    if isinstance(value, list):
        if not value:
            raise EdgecError(f"{where}: '{name}' lists no values; give at least one")
        for v in value:
            if not isinstance(v, (str, int, float, bool)):
                raise EdgecError(f"{where}: '{name}' = {value!r}: each value must be a string, number or boolean")
        return Param(name, "choice", values=tuple(dict.fromkeys(value)))
    if isinstance(value, dict):
        unknown = set(value) - {"low", "high", "step", "log"}
        if unknown or "low" not in value or "high" not in value:
            raise EdgecError(f"{where}: '{name}' = {value!r}: a range is a table with low, high and optionally "
                             "step and log" + (f" (unknown: {choices(unknown)})" if unknown else ""))
        low, high, step, log = value["low"], value["high"], value.get("step"), bool(value.get("log", False))
        for v in (low, high, step):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise EdgecError(f"{where}: '{name}' = {value!r}: low, high and step must be finite numbers")
        if not low <= high:
            raise EdgecError(f"{where}: '{name}' = {value!r}: low must not exceed high")
        if step is not None and step <= 0:
            raise EdgecError(f"{where}: '{name}' = {value!r}: step must be positive")
        if log and (low <= 0 or step is not None):
            raise EdgecError(f"{where}: '{name}' = {value!r}: a log range needs low > 0 and no step")
        is_int = all(isinstance(v, int) for v in (low, high)) and (step is None or isinstance(step, int))
        return Param(name, "int" if is_int else "float", low=low, high=high, step=step, log=log)
    if isinstance(value, (str, int, float, bool)):
        return Param(name, "fixed", values=(value,))
    raise EdgecError(f"{where}: '{name}' = {value!r}: expected a value, a list of values or a range table")


def _values(p: Param) -> list[Any]:
    """Every value a choice or fixed parameter takes; the bounds of a range."""
    return list(p.values) if p.kind in ("choice", "fixed") else [p.low, p.high]


def _check(params: dict[str, Param], profile, where: str) -> None:
    from edgec.config import BuildOptions

    fields = {f.name for f in dataclasses.fields(BuildOptions)}
    for name in params:
        if name in KNOWN:
            continue
        if name in OWNED or name not in fields:
            valid = sorted(set(KNOWN) | (fields - set(OWNED)))
            raise EdgecError(f"{where}: unknown search parameter '{name}'; valid: {', '.join(valid)}"
                             + (f" ('{name}' is set by edgec search itself)" if name in OWNED else ""))

    def bad(name: str, expected: str) -> EdgecError:
        return EdgecError(f"{where}: '{name}' = {params[name].to_json()!r}: expected {expected}")

    prec = params["precision"]
    if prec.kind not in ("choice", "fixed") or any(v not in profile.precisions for v in prec.values):
        raise bad("precision", f"precisions of profile '{profile.id}': {', '.join(profile.precisions)}")
    if params["prune_structure"].kind not in ("choice", "fixed") or any(
            v not in STRUCTURES for v in params["prune_structure"].values):
        raise bad("prune_structure", f"values among {', '.join(STRUCTURES)}")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1 for v in _values(params["prune"])):
        raise bad("prune", "shares of zero weights with 0 <= prune < 1 (0: no pruning)")
    cluster = params["cluster"]
    for v in _values(cluster):
        if v == NONE and cluster.kind != "int":
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= 256 or cluster.kind == "float":
            raise bad("cluster", "'none' or integers 2..256 (shared values per kernel)")
    if params["quantization"].kind not in ("choice", "fixed") or any(
            v not in QUANTIZATION for v in params["quantization"].values):
        raise bad("quantization", f"values among {', '.join(QUANTIZATION)}")
    if "qat" in params["quantization"].values and "int8" not in prec.values:
        raise bad("quantization", "'ptq' only: quantization-aware training needs int8, which 'precision' never "
                                  "draws")
    for name in ("epochs", "batch_size", "train_batch_size", "train_epochs"):
        if name in params and any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                  for v in _values(params[name])):
            raise bad(name, "integers >= 1")
    for name in ("lr", "train_lr"):
        if name in params and any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0
                                  for v in _values(params[name])):
            raise bad(name, "positive numbers")
    if any(not isinstance(v, bool) for v in _values(params["distill"])) or params["distill"].kind in ("int", "float"):
        raise bad("distill", "true and/or false")
    if "train_optimizer" in params and any(v not in OPTIMIZERS for v in _values(params["train_optimizer"])):
        raise bad("train_optimizer", f"values among {', '.join(OPTIMIZERS)}")


@dataclasses.dataclass(frozen=True)
class Config:
    """One trial's compression configuration: the build options it adds, and how to name it."""

    precision: str
    prune: float | None
    prune_structure: str | None
    cluster: int | None
    qat: bool
    epochs: int | None
    lr: float | None
    batch_size: int | None
    distill: bool
    extras: dict[str, Any]

    @property
    def compresses(self) -> bool:
        """A step fine-tunes (prune, 2:4, cluster or QAT)."""
        return bool(self.prune or self.prune_structure or self.cluster or self.qat)

    def build_options(self) -> dict[str, Any]:
        """The ``edgec.build`` keyword arguments of this configuration (data and output aside)."""
        out: dict[str, Any] = {"precision": self.precision, **self.extras}
        if self.prune_structure:
            out["prune_structure"] = self.prune_structure
        elif self.prune:
            out["prune"] = self.prune
        if self.cluster:
            out["cluster"] = self.cluster
        if self.qat:
            out["qat"] = True
        if self.compresses:
            out.update(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size)
            out["distill"] = bool(self.distill)  # the build distills unless told not to
        return out

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Config:
        return cls(**doc)

    def label(self) -> str:
        """A short name: ``int8 qat prune 0.8 c16 e5 lr 1e-03 distill``."""
        parts = [self.precision] + (["qat" if self.qat else "ptq"] if self.precision == "int8" else [])
        if self.prune_structure:
            parts.append(self.prune_structure)
        elif self.prune:
            parts.append(f"prune {self.prune:g}")
        if self.cluster:
            parts.append(f"c{self.cluster}")
        if self.compresses:
            parts += [f"e{self.epochs}", f"lr {self.lr:.0e}"]
            if self.distill:
                parts.append("distill")
        parts += [f"{k}={v}" for k, v in sorted(self.extras.items())]
        return " ".join(parts)


def sample(trial, space: Space) -> Config:
    """Draw one configuration for an Optuna trial: the compression steps first, then the
    fine-tune settings only when a step fine-tunes (a plain PTQ configuration has none, so equal
    builds get equal configurations and equal keys)."""
    precision = space["precision"].suggest(trial)
    structure = space["prune_structure"].suggest(trial)
    structure = None if structure == NONE else structure
    prune = None
    if structure is None:
        prune = float(space["prune"].suggest(trial)) or None
        prune = None if prune is None else round(prune, 6)
    cluster = space["cluster"].suggest(trial)
    cluster = None if cluster == NONE else int(cluster)
    qat = precision == "int8" and space["quantization"].suggest(trial) == "qat"
    config = dict(precision=precision, prune=prune, prune_structure=structure, cluster=cluster, qat=qat,
                  epochs=None, lr=None, batch_size=None, distill=False,
                  extras={n: space[n].suggest(trial) for n in space.extras})
    if prune or structure or cluster or qat:
        config.update(epochs=int(space["epochs"].suggest(trial)), lr=float(space["lr"].suggest(trial)),
                      batch_size=int(space["batch_size"].suggest(trial)),
                      distill=bool(space["distill"].suggest(trial)))
    return Config(**config)


@dataclasses.dataclass(frozen=True)
class Training:
    """How a ``--builder`` model is trained in one trial."""

    optimizer: str
    lr: float
    batch_size: int
    epochs: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def label(self) -> str:
        return f"train {self.optimizer} lr {self.lr:.0e} b{self.batch_size} e{self.epochs}"


def sample_training(trial, space: Space) -> Training:
    return Training(optimizer=space["train_optimizer"].suggest(trial), lr=float(space["train_lr"].suggest(trial)),
                    batch_size=int(space["train_batch_size"].suggest(trial)),
                    epochs=int(space["train_epochs"].suggest(trial)))
