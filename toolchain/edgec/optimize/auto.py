"""``--prune auto`` / ``--prune-channels auto``: the highest level within ``--max-accuracy-drop``.

The levels (:data:`edgec.optimize.spec.AUTO_LEVELS`) are searched by bisection, on the assumption
that the drop grows with the level: a level within the budget sends the search higher, one
beyond it lower, so five levels take three builds of the compression steps. Each level is one
trial of an Optuna study run by the machinery ``edgec search`` runs on (:mod:`edgec.studies`: the
study, the worker loop :func:`~edgec.studies.work`, the trial's constraint ``drop - budget <= 0``
and :func:`~edgec.studies.feasible`): the study lives in memory for the build, each level is
queued as a fixed trial, and the trial runs the compression steps at that level and measures the
drop of the compressed Keras model against the float model on the eval data. The fine-tune data
and the teacher's logits are prepared once for all levels, and the chosen level's model is the
one the build exports (no second fine-tuning).

The curve measured (level -> accuracy, drop, within the budget) goes into the manifest under
``optimization.auto`` and onto the build's output.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from edgec.errors import EdgecError
from edgec.optimize.spec import AUTO_LEVELS, OptimizeSpec

log = logging.getLogger(__name__)


def search(spec: OptimizeSpec, run_level: Callable[[OptimizeSpec], Any]) -> tuple[Any, dict[str, Any]]:
    """Bisect the levels of ``spec.auto`` with ``run_level`` (spec at one level -> OptimizeResult).

    Returns:
        The result of the highest level within the budget (of the lowest level measured when none
        is), and the record: option, budget, levels, the curve measured in level order, the choice.

    Raises:
        EdgecError: a level failed to build (its error, as the steps raised it).
    """
    from edgec.studies import counts, create_study, feasible, import_optuna, work

    optuna = import_optuna()
    knob, budget = spec.auto, spec.max_accuracy_drop
    levels = list(AUTO_LEVELS[knob])
    study = create_study(None, f"auto-{knob}", ["maximize"], sampler=optuna.samplers.RandomSampler(seed=spec.seed))
    results: dict[float, Any] = {}
    errors: dict[int, EdgecError] = {}

    class Objective:
        current = None

        def __call__(self, trial):
            self.current = trial.number
            level = trial.suggest_categorical(knob, levels)
            try:
                result = run_level(dataclasses.replace(spec, auto=None, **{knob: level}))
            except EdgecError as exc:
                errors[trial.number] = exc
                trial.set_user_attr("error", str(exc))
                raise
            float_acc, acc = result.steps[0]["accuracy"], result.steps[-1]["accuracy"]
            drop = round((float_acc - acc) * 100.0, 4)
            trial.set_user_attr("result", {"level": level, "accuracy": acc, "float_accuracy": float_acc,
                                           "drop": drop, "seconds": result.seconds})
            trial.set_constraint("accuracy_drop", drop - budget)
            results[level] = result
            log.info("optimize: %s %g: drop %.2f points (budget %g)", knob, level, drop, budget)
            return level

    objective = Objective()
    lo, hi, best = 0, len(levels) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        finished = counts(study)["finished"]
        study.enqueue_trial({knob: levels[mid]})  # the loop runs the queued trial, not a sampled one
        work(study, objective, n_trials=finished + 1, max_consecutive_failures=1_000)
        trial = study.trials[-1]
        if trial.params.get(knob) != levels[mid]:
            raise RuntimeError(f"the study ran {trial.params} instead of the queued {knob} {levels[mid]}")
        if trial.state.name != "COMPLETE":
            raise errors.get(trial.number) or EdgecError(
                f"{knob} {levels[mid]:g}: {trial.user_attrs.get('error', 'the level failed to build')}")
        if feasible(trial):
            best, lo = mid, mid + 1
            _keep(results, levels[mid])  # lower levels are no longer needed
        else:
            hi = mid - 1
            if best is None:  # the lowest level measured so far: built when none is within the budget
                _keep(results, levels[mid])
            else:
                results.pop(levels[mid], None)
    measured = sorted((t.user_attrs["result"] for t in study.trials if t.state.name == "COMPLETE"),
                      key=lambda r: r["level"])
    chosen = levels[best] if best is not None else measured[0]["level"]
    curve = [{"level": r["level"], "accuracy": r["accuracy"], "drop_points": r["drop"],
              "within_budget": r["drop"] <= budget} for r in measured]
    record = {
        "option": "--" + knob.replace("_", "-"), "max_accuracy_drop": budget, "levels": levels,
        "measured_on": "the compressed Keras model against the float model on the eval data",
        "search": "bisection over the levels; each level one trial of an Optuna study (edgec search's study and loop)",
        "curve": curve, "chosen": chosen, "within_budget": best is not None,
    }
    if best is None:
        record["note"] = (f"no level is within {budget:g} points; the lowest measured ({chosen:g}) is built and "
                          "the budget check on the artifact decides")
    return results[chosen], record


def _keep(results: dict[float, Any], level: float) -> None:
    for other in [k for k in results if k != level]:
        del results[other]
