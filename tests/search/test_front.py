"""The Pareto front: dominance on the study's objectives, constraints, repeated configurations."""

from __future__ import annotations

import pytest

from edgec.search import objectives

optuna = pytest.importorskip("optuna")


def _result(acc: float, ms: float, zstd: int) -> dict:
    return {"accuracy": acc, "drop": 0.0, "latency": {"p50_ms": ms, "p90_ms": ms, "ci_ms": [ms, ms],
            "energy_mj": None, "devices": ["local"]}, "bytes": zstd * 3, "zstd_bytes": zstd, "nonzero_params": 10,
            "compression": None}


def _trial(number: int, acc: float, ms: float, zstd: int, key: str | None = None, constraints=None,
           state="COMPLETE"):
    t = optuna.trial.create_trial(
        state=getattr(optuna.trial.TrialState, state), values=[acc, ms, zstd] if state == "COMPLETE" else None,
        user_attrs={"result": _result(acc, ms, zstd), "key": key or f"k{number}", "label": f"t{number}"},
        constraints=constraints)
    t.number = number
    return t


def test_dominance():
    dirs = ["maximize", "minimize"]
    assert objectives.dominates([0.9, 1.0], [0.8, 1.0], dirs)
    assert not objectives.dominates([0.9, 1.0], [0.9, 1.0], dirs)
    assert not objectives.dominates([0.9, 2.0], [0.8, 1.0], dirs)


def test_front_keeps_feasible_non_dominated_trials_once():
    trials = [
        _trial(0, 95.0, 1.0, 30_000),
        _trial(1, 94.0, 1.0, 30_000),  # dominated by 0
        _trial(2, 90.0, 1.0, 10_000),  # smaller
        _trial(3, 99.0, 0.5, 5_000, constraints={"accuracy_drop": 0.5}),  # would dominate all, but breaks a limit
        _trial(4, 90.0, 1.0, 10_000, key="k2"),  # the configuration of trial 2 again
        _trial(5, 80.0, 0.1, 40_000, state="PRUNED"),
    ]
    front = objectives.front_trials(trials, ["accuracy", "latency", "size"])
    assert [t.number for t in front] == [0, 2]
    assert not objectives.feasible(trials[3]) and objectives.feasible(trials[0])
    assert [t.number for t in objectives.front_trials(trials, ["latency"])] == [0, 1, 2]  # equal: none dominates
