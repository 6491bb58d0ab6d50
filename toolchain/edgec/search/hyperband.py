"""Hyperband-style early stopping on training and fine-tune epochs.

Optuna's pruners (``trial.report`` / ``trial.should_prune``) refuse multi-objective studies, and
a compression search has several objectives. So edgec runs Hyperband itself (Li et al., 2018, in
the asynchronous form of ASHA, Li et al., 2020, as Optuna's ``HyperbandPruner`` does): each trial
falls into one of the brackets ``s = 0..s_max`` (by a hash of the study and trial number,
weighted by the brackets' budgets), bracket ``s`` has rungs at ``min_resource * eta**(s + k)``
epochs, and at each rung the trial goes on only when its accuracy is among the best ``1/eta`` of
the accuracies that trials of its bracket reached at that rung (while fewer than ``eta`` have
reached it, every one goes on). The accuracies are kept in each trial's user attributes (``rungs``), so workers on
other machines compare against them through the study's storage. With TPE proposing the
configurations this is the BOHB-like setting (TPE + Hyperband).

A single-objective study (``--objectives accuracy``) uses Optuna's own ``HyperbandPruner``
through ``trial.report`` and ``trial.should_prune`` instead.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

RUNGS_ATTR = "rungs"
BRACKET_ATTR = "bracket"
COUNTED_STATES = ("COMPLETE", "PRUNED", "RUNNING")  # trials whose rung values count


def rung_resources(min_resource: int, eta: int, bracket: int, maximum: int) -> list[int]:
    """The epochs at which a trial of ``bracket`` is judged, below its ``maximum`` epochs."""
    out = []
    r = min_resource * eta ** bracket
    while r < maximum:
        out.append(int(r))
        r *= eta
    return out


def n_brackets(min_resource: int, eta: int, max_resource: int) -> int:
    """``s_max + 1``: brackets whose first rung lies below the maximum resource, plus the bracket
    that trains every trial in full."""
    if max_resource <= min_resource:
        return 1
    return int(math.floor(math.log(max_resource / min_resource, eta) + 1e-9)) + 1


def bracket_of(study_name: str, number: int, brackets: int, eta: int) -> int:
    """The bracket of trial ``number``: the most aggressive bracket (0) gets the most trials, in
    proportion to the brackets' budgets as in Hyperband."""
    s_max = brackets - 1
    budgets = [math.ceil((s_max + 1) / (s_max - s + 1) * eta ** (s_max - s)) for s in range(brackets)]
    digest = int(hashlib.sha256(f"{study_name}/{number}".encode()).hexdigest()[:12], 16)
    point = digest % sum(budgets)
    for s, budget in enumerate(budgets):
        if point < budget:
            return s
        point -= budget
    return s_max


def promotable(value: float, competing: list[float], eta: int) -> bool:
    """Successive halving's rule (maximizing): ``value`` is among the best ``1/eta`` of
    ``competing`` (which includes it). While fewer than ``eta`` compete there is no share to cut
    yet, and the trial goes on (Optuna's pruner keeps only the best then, which stops most of
    the first trials of a study on the noise of one epoch)."""
    if len(competing) < eta:
        return True
    ranked = sorted(competing, reverse=True)
    return value >= ranked[len(ranked) // eta - 1]


class Hyperband:
    """Hyperband over the rungs kept in trial user attributes (see the module docstring).

    Args:
        study: the Optuna study (several objectives).
        min_resource: epochs at the first rung of bracket 0.
        eta: reduction factor (keep the best 1/eta at each rung).
        max_resource: the most epochs of each stage (``{"train": 27, "fine_tune": 10}``).
    """

    def __init__(self, study, min_resource: int, eta: int, max_resource: dict[str, int]):
        self.study = study
        self.min_resource = min_resource
        self.eta = eta
        self.max_resource = max_resource

    def brackets(self, stage: str) -> int:
        return n_brackets(self.min_resource, self.eta, self.max_resource[stage])

    def bracket(self, trial) -> int:
        """The trial's bracket (kept in its user attributes), shared by its stages."""
        stages = [s for s in self.max_resource if self.max_resource[s] > 0]
        brackets = max((self.brackets(s) for s in stages), default=1)
        return bracket_of(self.study.study_name, trial.number, brackets, self.eta)

    def rungs(self, trial, stage: str, epochs: int) -> list[int]:
        """The epochs at which ``trial`` is judged in ``stage`` when it runs ``epochs`` epochs."""
        bracket = min(self.bracket(trial), self.brackets(stage) - 1)
        return rung_resources(self.min_resource, self.eta, bracket, epochs)

    def should_stop(self, trial, stage: str, epochs: int, accuracy: float) -> tuple[bool, dict[str, Any]]:
        """Record ``accuracy`` at ``epochs`` of ``stage`` and say whether the trial stops there.

        Returns:
            ``(stop, detail)``: detail names the rung, the bracket, how many trials compete there
            and the value the trial had to reach.
        """
        bracket = self.bracket(trial)
        key = f"{stage}@{epochs}"
        own = dict(trial.user_attrs.get(RUNGS_ATTR) or {})
        own[key] = accuracy
        trial.set_user_attr(RUNGS_ATTR, own)
        trial.set_user_attr(BRACKET_ATTR, bracket)
        competing = [accuracy]
        for other in self.study.get_trials(deepcopy=False):
            if other.number == trial.number or other.state.name not in COUNTED_STATES:
                continue
            if other.user_attrs.get(BRACKET_ATTR) != bracket:
                continue
            value = (other.user_attrs.get(RUNGS_ATTR) or {}).get(key)
            if value is not None:
                competing.append(float(value))
        ok = promotable(accuracy, competing, self.eta)
        ranked = sorted(competing, reverse=True)
        needed = ranked[len(ranked) // self.eta - 1] if len(ranked) >= self.eta else None
        return not ok, {"rung": key, "bracket": bracket, "competing": len(competing), "needed": needed,
                        "accuracy": accuracy}


class OptunaHyperband:
    """Optuna's ``HyperbandPruner`` for single-objective studies, through ``trial.report``.

    Steps are epochs; the fine-tune stage's steps follow the training stage's, so one trial's
    reports never collide.
    """

    def __init__(self, study, min_resource: int, eta: int, max_resource: dict[str, int]):
        self.study = study
        self.min_resource = min_resource
        self.eta = eta
        self.max_resource = max_resource
        self.offset = {"train": 0, "fine_tune": max_resource.get("train", 0)}

    def rungs(self, trial, stage: str, epochs: int) -> list[int]:
        # Optuna decides at every reported step; report at the same points Hyperband would judge
        return [r for r in (self.min_resource * self.eta ** k for k in range(32)) if r < epochs]

    def should_stop(self, trial, stage: str, epochs: int, accuracy: float) -> tuple[bool, dict[str, Any]]:
        step = self.offset[stage] + epochs
        trial.report(accuracy, step)
        own = dict(trial.user_attrs.get(RUNGS_ATTR) or {})
        own[f"{stage}@{epochs}"] = accuracy
        trial.set_user_attr(RUNGS_ATTR, own)
        stop = trial.should_prune()
        return stop, {"rung": f"{stage}@{epochs}", "accuracy": accuracy, "pruner": "optuna HyperbandPruner"}


def optuna_pruner(min_resource: int, eta: int, max_resource: dict[str, int]):
    """Optuna's HyperbandPruner over the whole step range of a single-objective study."""
    import optuna

    total = max(1, sum(max_resource.values()))
    return optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource=total, reduction_factor=eta)
