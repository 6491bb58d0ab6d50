"""Hyperband on a multi-objective study: rungs, brackets and the successive-halving rule, with
the accuracies kept in trial user attributes (an in-memory Optuna study, no TensorFlow)."""

from __future__ import annotations

import collections

import pytest

from edgec.search import hyperband

optuna = pytest.importorskip("optuna")


def test_rungs_and_brackets():
    assert hyperband.rung_resources(1, 3, 0, 10) == [1, 3, 9]
    assert hyperband.rung_resources(1, 3, 1, 10) == [3, 9]
    assert hyperband.rung_resources(1, 3, 0, 3) == [1]
    assert hyperband.rung_resources(1, 3, 0, 1) == []
    assert hyperband.n_brackets(1, 3, 27) == 4
    assert hyperband.n_brackets(1, 3, 10) == 3
    assert hyperband.n_brackets(1, 3, 1) == 1


def test_the_most_aggressive_bracket_gets_the_most_trials():
    got = collections.Counter(hyperband.bracket_of("s", n, 3, 3) for n in range(3000))
    assert got[0] > got[1] > got[2] > 0  # budgets 9 : 5 : 3
    assert abs(got[0] / 3000 - 9 / 17) < 0.05


def test_successive_halving_rule():
    assert hyperband.promotable(0.5, [0.5], 3)  # alone: goes on
    assert hyperband.promotable(0.4, [0.4, 0.5], 3)  # fewer than eta: no share to cut yet
    assert not hyperband.promotable(0.4, [0.4, 0.5, 0.45], 3)  # three: the best third goes on
    assert hyperband.promotable(0.5, [0.4, 0.5, 0.45], 3)
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]  # six compete: the best two go on
    assert hyperband.promotable(0.5, values, 3) and not hyperband.promotable(0.4, values, 3)


def _study_in_bracket_zero(trials: int):
    """An in-memory two-objective study whose first trials all fall into bracket 0."""
    name = next(f"s{i}" for i in range(1000)
                if all(hyperband.bracket_of(f"s{i}", n, 3, 3) == 0 for n in range(trials)))
    return optuna.create_study(study_name=name, directions=["maximize", "minimize"])


def test_hyperband_compares_trials_of_one_bracket_at_one_rung():
    study = _study_in_bracket_zero(4)
    hb = hyperband.Hyperband(study, 1, 3, {"fine_tune": 9})
    first, second, third, fourth = (study.ask() for _ in range(4))
    assert hb.rungs(first, "fine_tune", 9) == [1, 3]
    stop, detail = hb.should_stop(first, "fine_tune", 1, 90.0)
    assert not stop and detail["competing"] == 1 and detail["needed"] is None
    stop, detail = hb.should_stop(second, "fine_tune", 1, 80.0)
    assert not stop and detail["competing"] == 2  # fewer than eta: no share to cut yet
    assert second.user_attrs["rungs"] == {"fine_tune@1": 80.0}
    stop, detail = hb.should_stop(third, "fine_tune", 1, 85.0)
    assert stop and detail["needed"] == 90.0 and detail["competing"] == 3
    stop, _ = hb.should_stop(fourth, "fine_tune", 1, 95.0)
    assert not stop
    stop, detail = hb.should_stop(first, "fine_tune", 3, 91.0)  # a new rung: alone there
    assert not stop and detail["rung"] == "fine_tune@3"


def test_failed_trials_do_not_compete():
    study = _study_in_bracket_zero(2)
    hb = hyperband.Hyperband(study, 1, 3, {"fine_tune": 9})
    dead = study.ask()
    dead.set_user_attr("rungs", {"fine_tune@1": 99.0})
    dead.set_user_attr("bracket", hb.bracket(dead))
    study.tell(dead, state=optuna.trial.TrialState.FAIL)
    alive = study.ask()
    stop, detail = hb.should_stop(alive, "fine_tune", 1, 50.0)
    assert not stop and detail["competing"] == 1


def test_single_objective_studies_use_optunas_pruner():
    pruner = hyperband.optuna_pruner(1, 3, {"fine_tune": 9})
    study = optuna.create_study(direction="maximize", pruner=pruner)
    hb = hyperband.OptunaHyperband(study, 1, 3, {"fine_tune": 9})
    stopped = 0
    for value in (0.9, 0.1, 0.2, 0.15, 0.05, 0.1):
        trial = study.ask()
        stop = False
        for epochs in hb.rungs(trial, "fine_tune", 9):
            stop, detail = hb.should_stop(trial, "fine_tune", epochs, value)
            assert detail["pruner"] == "optuna HyperbandPruner"
            if stop:
                break
        study.tell(trial, state=optuna.trial.TrialState.PRUNED) if stop else study.tell(trial, value)
        stopped += stop
    assert stopped >= 1
    assert study.trials[0].intermediate_values  # through trial.report
