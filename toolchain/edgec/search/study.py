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

from edgec.budgets import SEARCH
from edgec.budgets import upgrade as upgrade_budgets
from edgec.errors import EdgecError, MissingExtra
from edgec.search import interrupts
from edgec.studies import (  # noqa: F401  (part of this module's API: the trials and reports use them)
    FINISHED,
    SURPLUS_ATTR,
    Surplus,
    check_claim,
    counts,
    create_study,
    fail_stale,
    import_optuna,
    write_journal,
)
from edgec.studies import work as work_trials

log = logging.getLogger(__name__)

SETTINGS_ATTR = "edgec.search"
BASELINES_ATTR = "edgec.baselines"
WORKER_ATTR_PREFIX = "edgec.worker."
#: settings that must match when a study is started again (the rest may change between starts)
IDENTITY = ("mode", "model", "builder", "target", "profile_sha256", "data", "objectives", "constraints", "space",
            "seed", "device")


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
            # workers (or a worker and a reader such as the dashboard) that start together on a new
            # database race to create its tables and stamp its schema version: the losers find both
            # on the next attempt
            if attempt < 3 and _lost_creation_race(exc):
                time.sleep(0.5 + attempt)
                continue
            shown = url.split("@")[-1] if "@" in url else url
            raise EdgecError(f"cannot open the search storage '{shown}': {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    raise AssertionError("unreachable")


def _lost_creation_race(exc: Exception) -> bool:
    """Another process created the tables, or stamped the schema version, in the same moment
    (PostgreSQL: "already exists" or "duplicate key"; SQLite: "already exists" or "UNIQUE
    constraint failed" on ``alembic_version``)."""
    text = str(exc)
    return any(s in text for s in ("already exists", "duplicate key", "UNIQUE constraint failed"))


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
    study = create_study(storage, name, settings["directions"], sampler, pruner)
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
    """Settings stored by earlier versions, in today's words (:data:`edgec.budgets.RENAMED`): the
    median latency constraint was ``max_latency_ms`` (the same limit, named p50 since CI's latency
    budget is a p90)."""
    constraints = settings.get("constraints")
    if isinstance(constraints, dict):
        return {**settings, "constraints": upgrade_budgets(constraints, SEARCH)}
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


def work(study, objective, n_trials: int, **kwargs: Any) -> str:
    """:func:`edgec.studies.work` with a search's Ctrl-C handling: a Ctrl-C that came during the
    storage's bookkeeping stops the loop before the next trial."""
    return work_trials(study, objective, n_trials, checkpoint=interrupts.checkpoint, **kwargs)
