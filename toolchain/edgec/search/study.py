"""The Optuna study behind a search: storage, what the study searches (checked on every start),
the samplers, and the worker loop that finishes exactly N trials across workers.

Storage is Optuna's RDB storage: an SQLite file in ``--out`` by default, or
``postgresql://...`` for workers on many machines (SQLAlchemy's psycopg 3 driver). Every running
trial sends a heartbeat; a worker that finds a trial without one for the grace period marks it
failed, and Optuna's ``RetryHeartbeatStaleTrialCallback`` queues the same parameters again, so
the trial of a worker that died is retried by another (or by the next start of the search).

A worker starts a trial only while finished + running + queued trials stay below N; two workers
that start one at the same moment past N are told apart by trial number afterwards (the later one
stops at once and is marked ``surplus``), so a study ends with exactly N finished trials however
many workers run it, and a search that is stopped and started again continues to N, not N + k.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError, MissingExtra
from edgec.search import interrupts

log = logging.getLogger(__name__)

SETTINGS_ATTR = "edgec.search"
BASELINES_ATTR = "edgec.baselines"
WORKER_ATTR_PREFIX = "edgec.worker."
SURPLUS_ATTR = "surplus"
FINISHED = ("COMPLETE", "PRUNED")
#: settings that must match when a study is started again (the rest may change between starts)
IDENTITY = ("mode", "model", "builder", "target", "profile_sha256", "data", "objectives", "constraints", "space",
            "seed", "device")


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise MissingExtra("optuna", "search", "edgec search") from None
    optuna.logging.set_verbosity(optuna.logging.DEBUG if log.isEnabledFor(logging.DEBUG) else optuna.logging.ERROR)
    return optuna


def storage_url(storage: str | None, out: Path) -> str:
    """The SQLAlchemy URL of ``--storage`` (default: ``sqlite:///OUT/search.db``); PostgreSQL URLs get
    the psycopg 3 driver."""
    if storage is None:
        out.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(out / 'search.db').resolve()}"
    if storage.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise MissingExtra("psycopg", "postgresql", "--storage postgresql://") from None
        return "postgresql+psycopg://" + storage.split("://", 1)[1]
    if storage.startswith(("sqlite:///", "postgresql+", "mysql")):
        return storage
    if "://" not in storage:  # a path: an SQLite file
        Path(storage).parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{Path(storage).resolve()}"
    raise EdgecError(f"--storage '{storage}': expected sqlite:///PATH, a file path or postgresql://USER@HOST/DB")


def open_storage(url: str, heartbeat: int | None = 20, retries: int = 3):
    """Optuna's RDB storage with heartbeats and retries of trials whose worker died.

    Raises:
        EdgecError: the database cannot be reached.
    """
    import warnings

    optuna = import_optuna()
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    else:
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    if heartbeat:
        with warnings.catch_warnings():  # experimental in Optuna's eyes since 2.8
            warnings.simplefilter("ignore")
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries)
        kwargs.update(heartbeat_interval=int(heartbeat), grace_period=int(max(2 * heartbeat, heartbeat + 2)),
                      heartbeat_stale_trial_callback=retry)
    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                storage = optuna.storages.RDBStorage(url, **kwargs)
            if url.startswith("sqlite"):
                _sqlite_wal(storage.engine)
            return storage
        except Exception as exc:  # SQLAlchemy's errors: the one line that says why
            # workers that start together on a new database race to create its tables: the losers
            # find them on the next attempt
            if attempt < 3 and ("already exists" in str(exc) or "duplicate key" in str(exc)):
                time.sleep(0.5 + attempt)
                continue
            shown = url.split("@")[-1] if "@" in url else url
            raise EdgecError(f"cannot open the search storage '{shown}': {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    raise AssertionError("unreachable")


def _sqlite_wal(engine) -> None:
    """WAL journal and one sync per checkpoint rather than per commit: a trial writes a dozen small
    records, and workers on one machine read while another writes. A power cut may lose the last
    commits, never the file; a lost running trial is retried like one whose worker died."""
    import sqlalchemy

    def pragmas(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened so far reconnect with the pragmas


def load_study(storage, name: str):
    """An existing study, or an error naming the studies there."""
    optuna = import_optuna()
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        raise EdgecError(f"no study '{name}' in the storage; studies there: {', '.join(names) or 'none'}") from None


def make_sampler(name: str, seed: int, n_trials: int):
    """TPE (multi-objective, constant liar for parallel workers), NSGA-II or random, seeded."""
    optuna = import_optuna()
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(4, min(10, n_trials // 3)),
                                          constant_liar=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, n_trials // 4)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise EdgecError(f"unknown --sampler '{name}'; valid: nsga2, random, tpe")


def open_study(storage, name: str, settings: dict[str, Any], sampler, pruner=None):
    """Create the study or load it, and check that it searches what ``settings`` say.

    Raises:
        EdgecError: the study exists and searches something else (the first difference is named).
    """
    optuna = import_optuna()
    directions = settings["directions"]
    study = optuna.create_study(storage=storage, study_name=name, directions=directions, sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    if [d.name.lower() for d in study.directions] != directions:
        raise EdgecError(f"study '{name}' optimizes {len(study.directions)} objective(s) "
                         f"({', '.join(d.name.lower() for d in study.directions)}), not {', '.join(directions)}; "
                         "pick another --study")
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, settings)
        stored = settings
    stored = _renamed(stored)
    for field in IDENTITY:
        if _canonical(stored.get(field)) != _canonical(settings.get(field)):
            raise EdgecError(f"study '{name}' was started with another {field.replace('_', ' ')}: "
                             f"{_short(stored.get(field))} (now {_short(settings.get(field))}); resume it with the "
                             "same arguments or pick another --study")
    return study


def _renamed(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings stored by earlier versions, in today's words: the median latency constraint was
    ``max_latency_ms`` (the same limit, named p50 since CI's latency budget is a p90)."""
    constraints = settings.get("constraints")
    if isinstance(constraints, dict) and "max_latency_ms" in constraints:
        constraints = dict(constraints)
        constraints["max_latency_p50_ms"] = constraints.pop("max_latency_ms")
        return {**settings, "constraints": constraints}
    return settings


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(value: Any) -> str:
    text = _canonical(value)
    return text if len(text) <= 160 else text[:157] + "..."


def register_worker(study) -> tuple[str, int]:
    """A name for this worker (``host:pid``) and its index among the study's workers (it shifts
    the sampler's seed, so that workers do not propose the same configurations)."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    index = sum(1 for key in study.user_attrs if key.startswith(WORKER_ATTR_PREFIX))
    study.set_user_attr(WORKER_ATTR_PREFIX + uuid.uuid4().hex[:12], {"name": name, "started": time.time()})
    return name, index


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
         worker: str = "") -> str:
    """Run trials of ``study`` until it has ``n_trials`` finished ones (or ``timeout`` seconds).

    Args:
        objective: Optuna objective (a trial in, objective values out).
        on_trial: called with ``(frozen_trial, seconds)`` after each trial this worker ran.
        max_consecutive_failures: give up after this many failed trials in a row.
        journal: a JSON-lines file that gets one line per trial start and end.

    Returns:
        Why it stopped: ``"done"`` or ``"timeout"``.

    Raises:
        EdgecError: too many failures in a row (the last error is named).
    """
    start = time.monotonic()
    failures = 0
    last_error = None
    while True:
        interrupts.checkpoint()  # a Ctrl-C that came during the storage's bookkeeping stops here
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
