"""Optuna studies as edgec runs them: the study, trial counts, the worker loop that finishes
exactly N trials across workers, and which trials meet their constraints.

Shared by ``edgec search`` (:mod:`edgec.search.study` adds the storage, the settings a study
must keep and the samplers) and the compression steps' ``--prune auto``
(:mod:`edgec.optimize.auto`: one in-memory study per build). Optuna loads only when a study is
opened.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError, MissingExtra

log = logging.getLogger("edgec.search.study")

#: the user attribute of a trial that started after the study already had N (it is not run)
SURPLUS_ATTR = "surplus"
FINISHED = ("COMPLETE", "PRUNED")


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise MissingExtra("optuna", "search", "edgec search") from None
    optuna.logging.set_verbosity(optuna.logging.DEBUG if log.isEnabledFor(logging.DEBUG) else optuna.logging.ERROR)
    return optuna


def create_study(storage, name: str, directions: list[str], sampler, pruner=None):
    """Create the study ``name`` or load it (``storage`` None: in memory).

    Raises:
        EdgecError: the study exists and optimizes other directions.
    """
    optuna = import_optuna()
    study = optuna.create_study(storage=storage, study_name=name, directions=directions, sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    if [d.name.lower() for d in study.directions] != list(directions):
        raise EdgecError(f"study '{name}' optimizes {len(study.directions)} objective(s) "
                         f"({', '.join(d.name.lower() for d in study.directions)}), not {', '.join(directions)}; "
                         "pick another --study")
    return study


def feasible(trial) -> bool:
    """A finished trial whose constraints (Optuna's: each <= 0) all hold."""
    return all(v <= 0 for v in (trial.constraints or {}).values())


def counts(study) -> dict[str, int]:
    """Trials by state (``COMPLETE``, ``PRUNED``, ``RUNNING``, ``WAITING``, ``FAIL``), with
    ``finished`` and ``surplus``."""
    out = {s: 0 for s in ("COMPLETE", "PRUNED", "RUNNING", "WAITING", "FAIL")}
    surplus = 0
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
        if t.state.name == "FAIL" and t.user_attrs.get(SURPLUS_ATTR):
            surplus += 1
    out["finished"] = out["COMPLETE"] + out["PRUNED"]
    out["surplus"] = surplus
    return out


class Surplus(EdgecError):
    """The study already had N trials finished, running or queued when this one started."""


def check_claim(study, trial, n_trials: int) -> None:
    """Raise :class:`Surplus` when trials numbered below ``trial`` already make N."""
    ahead = sum(1 for t in study.get_trials(deepcopy=False)
                if t.number < trial.number and t.state.name in ("COMPLETE", "PRUNED", "RUNNING", "WAITING"))
    if ahead >= n_trials:
        trial.set_user_attr(SURPLUS_ATTR, True)
        raise Surplus(f"trial {trial.number} started after the study had {n_trials} trials; not run")


def fail_stale(study) -> None:
    """Mark trials without a heartbeat failed (their retries are queued by the storage's callback)."""
    import warnings

    optuna = import_optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)


def work(study, objective, n_trials: int, *, timeout: float | None = None, poll: float = 1.0,
         on_trial=None, max_consecutive_failures: int = 10, journal: Path | None = None,
         worker: str = "", checkpoint: Callable[[], None] | None = None) -> str:
    """Run trials of ``study`` until it has ``n_trials`` finished ones (or ``timeout`` seconds).

    Args:
        objective: Optuna objective (a trial in, objective values out).
        on_trial: called with ``(frozen_trial, seconds)`` after each trial this worker ran.
        max_consecutive_failures: give up after this many failed trials in a row.
        journal: a JSON-lines file that gets one line per trial start and end.
        checkpoint: called before each trial (``edgec search`` raises a remembered Ctrl-C there).

    Returns:
        Why it stopped: ``"done"`` or ``"timeout"``.

    Raises:
        EdgecError: too many failures in a row (the last error is named).
    """
    start = time.monotonic()
    failures = 0
    last_error = None
    while True:
        if checkpoint is not None:
            checkpoint()
        if timeout is not None and time.monotonic() - start >= timeout:
            return "timeout"
        fail_stale(study)
        c = counts(study)
        if c["finished"] >= n_trials:
            return "done"
        if c["finished"] + c["RUNNING"] + c["WAITING"] >= n_trials and c["WAITING"] == 0:
            time.sleep(poll)  # the last trials run elsewhere; one of them may yet need a retry
            continue
        objective.current = None
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=1, catch=(Exception,))
        seconds = time.perf_counter() - t0
        trial = next((t for t in study.get_trials(deepcopy=False) if t.number == objective.current), None)
        if trial is None:
            continue
        write_journal(journal, {"event": "end", "trial": trial.number, "state": trial.state.name, "worker": worker,
                           "seconds": round(seconds, 4), "timings": trial.user_attrs.get("timings")})
        if trial.state.name == "FAIL" and not trial.user_attrs.get(SURPLUS_ATTR):
            failures += 1
            last_error = trial.user_attrs.get("error") or "see the log (--debug)"
        elif trial.state.name != "FAIL":
            failures = 0
        if on_trial is not None:
            on_trial(trial, seconds)
        if failures >= max_consecutive_failures:
            raise EdgecError(f"{failures} trials failed in a row; the last one: {last_error}")


def write_journal(path: Path | None, record: dict[str, Any]) -> None:
    if path is None:
        return
    record = {"time": round(time.time(), 3), **record}
    with open(path, "a") as fh:  # one write per line: lines of several workers do not interleave
        fh.write(json.dumps(record) + "\n")
