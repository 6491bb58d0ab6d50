"""Running a search: check the request, open (or resume) the study, measure the baselines, run
the workers, and report the front; ``show`` and ``export`` read a study back."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgec.budgets import SEARCH, used_by
from edgec.budgets import check_value as check_budget_value
from edgec.errors import EdgecError, choices
from edgec.search import cache as cache_mod
from edgec.search import interrupts
from edgec.search import space as space_mod
from edgec.search.device import Device
from edgec.search.objectives import DEFAULT_OBJECTIVES, OBJECTIVES
from edgec.search.study import BASELINES_ATTR, SETTINGS_ATTR

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "nsga2", "random")
PRUNERS = ("hyperband", "none")
JOURNAL = "journal.jsonl"
#: the budgets a search takes as constraints (:mod:`edgec.budgets`), fields of :class:`Request`
CONSTRAINTS = tuple(used_by(SEARCH))


@dataclasses.dataclass
class Request:
    """What ``edgec search`` is asked to do (the CLI's options; see the README's table).

    Attributes:
        model: a trained tf-keras model file (or ``builder`` instead).
        builder: ``module:function`` or ``file.py:function`` taking ``hp`` and returning an
            untrained model, trained on ``train`` data in each trial.
        target: device profile id or file.
        eval: labelled data: every trial's accuracy (and Hyperband's rungs).
        fine_tune: labelled data for the compression steps (with ``builder``: default ``train``).
        calib: int8 representative data (default: the fine-tune inputs).
        train: labelled training data of ``builder`` models.
        trials: finished trials (complete or stopped early) the study ends with.
        timeout: stop starting trials after this many seconds.
        objectives: among accuracy, latency, size (zstd bytes), bytes, params, energy; ``None``:
            accuracy, latency, size, and energy when the device reads power.
        max_accuracy_drop, max_latency_p50_ms, max_bytes: constraints (points; the median (p50)
            latency in ms, as the latency objective; artifact bytes).
        space: a TOML file overriding the default space of the target kind.
        sampler: tpe, nsga2 or random; pruner: hyperband or none.
        device: where and how trials are measured.
        storage: Optuna storage URL (default ``sqlite:///OUT/search.db``); study: its name.
        workers: worker processes on this machine (others may join from elsewhere).
        seed: seeds the builds, the training and the sampler.
        out: builds, trained models, the default storage and the journal.
        heartbeat: seconds between a running trial's heartbeats; a trial without one for twice
            that long is failed and retried (``retries`` times).
    """

    target: str
    eval: str
    model: Path | None = None
    builder: str | None = None
    fine_tune: str | None = None
    calib: str | None = None
    train: str | None = None
    trials: int = 20
    timeout: float | None = None
    objectives: list[str] | None = None
    max_accuracy_drop: float | None = None
    max_latency_p50_ms: float | None = None
    max_bytes: float | None = None
    space: Path | None = None
    sampler: str = "tpe"
    pruner: str = "hyperband"
    device: Device = dataclasses.field(default_factory=Device)
    storage: str | None = None
    study: str | None = None
    workers: int = 1
    seed: int = 0
    out: Path = Path("search")
    heartbeat: int = 20
    retries: int = 3
    custom_objects: tuple[str, ...] = ()  # modules or .py files registering the model's custom layers

    def study_name(self) -> str:
        if self.study:
            return self.study
        stem = Path(self.model).stem if self.model else self.builder.rpartition(":")[2]
        return f"{stem}-{Path(self.target).stem}"


def check(request: Request):
    """Check the request before TensorFlow or Optuna load; returns ``(profile, space)``.

    Raises:
        EdgecError: bad input (exit 2), naming the option.
    """
    from edgec import profiles

    _check_settings(request)
    if not 1 <= request.device.min_runs <= request.device.max_runs:
        raise EdgecError(f"measurement repetitions: expected 1 <= min ({request.device.min_runs}) <= max "
                         f"({request.device.max_runs})")
    if request.heartbeat < 1:
        raise EdgecError(f"--heartbeat must be at least 1 s, got {request.heartbeat}")
    _check_data(request)
    profile = profiles.get(request.target)
    space = space_mod.load(request.space, profile, builder=request.builder is not None)
    if not (request.calib or request.fine_tune) and ("int8" in _values(space["precision"])
                                                     or (request.model and "int8" in profile.precisions)):
        raise EdgecError("int8 builds (the plain int8 baseline, int8 trials) need representative data: pass --calib "
                         "DATA (or --fine-tune DATA, whose inputs then calibrate)")
    can_compress = any(p in space.params and any(v not in (0, 0.0, None, space_mod.NONE, "ptq", False)
                                                 for v in _values(space[p]))
                       for p in ("prune", "prune_structure", "cluster", "quantization"))
    if can_compress and not request.fine_tune:
        raise EdgecError("the search space has compression steps, which fine-tune: pass --fine-tune DATA (labelled), "
                         f"or a --space without them (space: {space.source})")
    from edgec.tfcompat import plan_onednn

    plan_onednn(training=can_compress or request.builder is not None)  # before TensorFlow loads
    return profile, space


def _check_settings(request: Request) -> None:
    """The model or builder, the study's settings, its objectives and its constraints."""
    if (request.model is None) == (request.builder is None):
        raise EdgecError("give a MODEL or --builder module:function (not both)")
    if request.builder is not None and not request.train:
        raise EdgecError("--builder models are trained in each trial: pass --train DATA (labelled)")
    if request.model is not None and request.train:
        raise EdgecError("--train DATA trains --builder models; a MODEL is already trained")
    if request.builder is not None and not request.fine_tune:
        request.fine_tune = request.train
    if request.trials < 1:
        raise EdgecError(f"--trials must be at least 1, got {request.trials}")
    if request.workers < 1:
        raise EdgecError(f"--workers must be at least 1, got {request.workers}")
    if request.sampler not in SAMPLERS:
        raise EdgecError(f"unknown --sampler '{request.sampler}'; valid: {choices(SAMPLERS)}")
    if request.pruner not in PRUNERS:
        raise EdgecError(f"unknown --pruner '{request.pruner}'; valid: {choices(PRUNERS)}")
    if request.objectives is not None:
        unknown = [o for o in request.objectives if o not in OBJECTIVES]
        if unknown or not request.objectives:
            raise EdgecError(f"unknown objective(s) {', '.join(unknown) or '(none given)'}; valid: {choices(OBJECTIVES)}")
        if len(set(request.objectives)) != len(request.objectives):
            raise EdgecError(f"--objectives lists one twice: {','.join(request.objectives)}")
    for name in CONSTRAINTS:
        value = getattr(request, name)
        problem = None if value is None else check_budget_value(name, value)
        if problem:
            raise EdgecError(f"--{name.replace('_', '-')} {value:g}: {problem}")


def _check_data(request: Request) -> None:
    """The model file, the custom layers and the data files (the eval data with its labels)."""
    if request.model is not None and not Path(request.model).exists():
        raise EdgecError(f"model '{request.model}' does not exist")
    if request.custom_objects:
        from edgec.custom_objects import check as check_custom_objects

        request.custom_objects = check_custom_objects(request.custom_objects)
    for name in ("eval", "fine_tune", "calib", "train"):
        spec = getattr(request, name)
        if spec and ":" not in str(spec) and not Path(spec).exists():
            raise EdgecError(f"--{name.replace('_', '-')} data '{spec}' does not exist")
    if str(request.eval).endswith(".npz") and Path(request.eval).is_file():
        import numpy as np

        with np.load(request.eval) as doc:
            if "y" not in doc.files:
                raise EdgecError(f"--eval data '{request.eval}' has no labels (array 'y'); every trial's accuracy "
                                 "is measured on it")


def _values(p: space_mod.Param) -> list[Any]:
    return list(p.values) if p.kind in ("choice", "fixed") else [p.low, p.high]


def settings_of(request: Request, profile, space, objectives: list[str], energy: dict[str, Any],
                builder_id: dict[str, Any] | None) -> dict[str, Any]:
    """What the study searches (stored in it; the ``IDENTITY`` fields must match on a resume)."""
    data = {name: cache_mod.data_digest(getattr(request, name)) for name in ("eval", "fine_tune", "calib", "train")}
    return {
        "version": 1, "mode": "builder" if request.builder else "model",
        "model": cache_mod.data_digest(request.model) if request.model else None,
        "model_path": str(Path(request.model).resolve()) if request.model else None,
        "builder": builder_id, "target": profile.id, "profile_sha256": cache_mod.digest(cache_mod.profile_doc(profile)),
        "data": data, "data_specs": {name: str(getattr(request, name)) if getattr(request, name) else None
                                     for name in data},
        "objectives": objectives, "directions": [OBJECTIVES[o][0] for o in objectives],
        "constraints": constraints(request),
        "space": space.to_json(), "seed": request.seed, "device": request.device.key(), "energy": energy,
        "sampler": request.sampler, "pruner": request.pruner, "versions": cache_mod.library_versions(),
    }


def _objectives(request: Request, profile, stored: dict[str, Any] | None) -> tuple[list[str], dict[str, Any]]:
    """The objectives and whether energy is one (and why not)."""
    if stored is not None and request.objectives is None:
        return list(stored["objectives"]), stored.get("energy") or {}
    wanted = list(request.objectives or DEFAULT_OBJECTIVES)
    auto = request.objectives is None
    if not auto and "energy" not in wanted:
        return wanted, {"available": None, "reason": "not requested"}
    available, reason = request.device.power(profile.id)
    energy = {"available": available, "reason": reason}
    if available and auto:
        wanted.append("energy")
    if not available and "energy" in wanted:
        log.warning("energy is not an objective: %s", reason)
        wanted.remove("energy")
        if not wanted:
            raise EdgecError(f"energy was the only objective, and {request.device.where()} reads no power: {reason}")
    return wanted, energy


def _storage_shown(url: str) -> str:
    return url.split("://", 1)[0] + "://" + url.split("@", 1)[1] if "@" in url else url


def run(request: Request, on_event: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a search until its study has ``request.trials`` finished trials.

    Args:
        request: what to search.
        on_event: called with a progress line and its details after each trial of this process
            (and with the setup steps).

    Returns:
        The study's summary (:func:`edgec.search.report.summary`) with ``stopped``: ``done`` or
        ``timeout``.

    Raises:
        EdgecError: bad input, an unreachable storage or device, or a study started with other
            arguments.
    """
    from edgec.search.interrupts import interrupts_kept

    with interrupts_kept():
        return _run(request, on_event)


def _run(request: Request, on_event: Callable[[str, dict[str, Any]], None] | None) -> dict[str, Any]:
    from edgec.search import report
    from edgec.search.study import import_optuna, load_study, open_storage, open_study, storage_url

    profile, space = check(request)
    optuna = import_optuna()
    request.out = Path(request.out)
    request.out.mkdir(parents=True, exist_ok=True)
    url = storage_url(request.storage, request.out)
    storage = open_storage(url, request.heartbeat, request.retries)
    name = request.study_name()
    stored = None
    if name in optuna.study.get_all_study_names(storage):
        stored = load_study(storage, name).user_attrs.get(SETTINGS_ATTR)
    builder_id = None
    if request.builder:
        from edgec.search import builder as builder_mod

        _, builder_id = builder_mod.load(request.builder)
    emit = on_event or (lambda line, event: log.info("%s", line))
    objectives, energy = _objectives(request, profile, stored)
    settings = settings_of(request, profile, space, objectives, energy, builder_id)
    study = open_study(storage, name, settings, sampler=None)
    emit(f"study '{name}' in {_storage_shown(url)}: {len(study.trials)} trial(s) so far; objectives "
         f"{', '.join(objectives)}; measured on {request.device.where()}", {"event": "study"})
    if request.model is not None and study.user_attrs.get(BASELINES_ATTR) is None:
        emit("baselines: fp32 and plain int8 PTQ, built and measured", {"event": "baselines"})
        ctx = _context(request, profile, space, objectives)
        with interrupts.immediate():
            baselines = ctx.baselines()
        study.set_user_attr(BASELINES_ATTR, baselines)
    children = []
    if request.workers > 1:
        spawn = multiprocessing.get_context("spawn")
        for _ in range(request.workers - 1):
            proc = spawn.Process(target=_child, args=(request, url, name, _print_event if on_event else None),
                                 daemon=False)
            proc.start()
            children.append(proc)
    try:
        stopped = work(request, url, name, emit, profile=profile, space=space, objectives=objectives)
    finally:
        for proc in children:
            proc.join()
    failed = [p.exitcode for p in children if p.exitcode]
    if failed:
        log.warning("%d worker process(es) ended with exit codes %s", len(failed), failed)
    doc = report.summary(load_study(storage, name), _storage_shown(url))
    doc["stopped"] = stopped
    return doc


def _print_event(line: str, event: dict[str, Any]) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)


def _child(request: Request, url: str, name: str, on_event) -> None:
    """A spawned worker process (its own TensorFlow, its own sampler seed)."""
    import os

    from edgec.search.interrupts import interrupts_kept

    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    try:
        with interrupts_kept():
            work(request, url, name, on_event or (lambda line, event: None))
    except EdgecError as exc:
        import sys

        print(f"Error: worker {os.getpid()}: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None


def _context(request: Request, profile, space, objectives: list[str]):
    from edgec.search.trial import Context

    builder = builder_id = None
    if request.builder:
        from edgec.search import builder as builder_mod

        builder, builder_id = builder_mod.load(request.builder)
    return Context(profile=profile, space=space, objectives=objectives,
                   constraints=constraints(request),
                   device=request.device, out=Path(request.out), seed=request.seed, eval=request.eval,
                   fine_tune=request.fine_tune, calib=request.calib, model=request.model, builder=builder,
                   builder_id=builder_id, train=request.train, custom_objects=tuple(request.custom_objects))


def constraints(request: Request) -> dict[str, float | None]:
    """The request's constraints by budget name (None: not set)."""
    return {name: getattr(request, name) for name in CONSTRAINTS}


def work(request: Request, url: str, name: str, emit: Callable[[str, dict[str, Any]], None], *,
         profile=None, space=None, objectives: list[str] | None = None) -> str:
    """One worker: run trials of study ``name`` until it has ``request.trials`` finished ones."""
    from edgec.search import hyperband, report
    from edgec.search import study as study_mod

    if profile is None:
        profile, space = check(request)
    storage = study_mod.open_storage(url, request.heartbeat, request.retries)
    study = study_mod.load_study(storage, name)
    settings = study.user_attrs[SETTINGS_ATTR]
    objectives = objectives or list(settings["objectives"])
    worker, index = study_mod.register_worker(study)
    study.sampler = study_mod.make_sampler(request.sampler, request.seed + index, request.trials)
    stopper = None
    if request.pruner == "hyperband":
        hb = space.hyperband
        max_resource = {"fine_tune": int(space["epochs"].maximum)}
        if request.builder:
            max_resource["train"] = int(space["train_epochs"].maximum)
        if len(objectives) == 1:
            study.pruner = hyperband.optuna_pruner(hb.min_resource, hb.reduction_factor, max_resource)
            stopper = hyperband.OptunaHyperband(study, hb.min_resource, hb.reduction_factor, max_resource)
        else:
            stopper = hyperband.Hyperband(study, hb.min_resource, hb.reduction_factor, max_resource)
    from edgec.search.trial import Runner

    ctx = _context(request, profile, space, objectives)
    journal = Path(request.out) / JOURNAL
    runner = Runner(ctx, study, stopper, request.trials, worker, journal,
                    on_stage=lambda number, text: emit(f"  trial {number}: {text}",
                                                       {"event": "stage", "trial": number, "stage": text,
                                                        "worker": worker}))
    started = time.monotonic()

    def on_trial(trial, seconds: float) -> None:
        trials = study.get_trials(deepcopy=False)
        counts = study_mod.counts(study)
        front = report.front_trials(trials, objectives)
        eta = _eta(trials, counts, request.trials)
        line = report.progress_line(counts, request.trials, trial, seconds, front, objectives, eta)
        emit(line, {"event": "trial", "trial": trial.number, "state": trial.state.name, "seconds": seconds,
                    "finished": counts["finished"], "front": [t.number for t in front], "eta_s": eta,
                    "worker": worker, "elapsed_s": time.monotonic() - started})

    return study_mod.work(study, runner, request.trials, timeout=request.timeout, on_trial=on_trial,
                          journal=journal, worker=worker)


def _eta(trials, counts: dict[str, int], n_trials: int) -> float | None:
    """Seconds left: the mean duration of finished trials times those left, over the workers
    running trials now."""
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                 if t.state.name in ("COMPLETE", "PRUNED") and t.datetime_start and t.datetime_complete]
    left = n_trials - counts["finished"]
    if not durations or left <= 0:
        return 0.0 if left <= 0 else None
    workers = len({t.user_attrs.get("worker") for t in trials if t.state.name == "RUNNING"}) or 1
    return sum(durations) / len(durations) * left / workers


# -- reading a study back ------------------------------------------------------------------------

def show(study: str, storage: str | None = None, out: Path = Path("search")) -> dict[str, Any]:
    """The summary of a study (see :func:`edgec.search.report.summary`)."""
    from edgec.search import report
    from edgec.search.study import load_study, open_storage, storage_url

    url = storage_url(storage, Path(out)) if storage else _existing_default(Path(out))
    return report.summary(load_study(open_storage(url, heartbeat=None), study), _storage_shown(url))


def _existing_default(out: Path) -> str:
    path = out / "search.db"
    if not path.is_file():
        raise EdgecError(f"no search storage at '{path}'; pass --storage URL (or --out DIR of the search)")
    return f"sqlite:///{path.resolve()}"


def export(study: str, trial: int, dest: Path, storage: str | None = None, out: Path = Path("search")) -> Path:
    """Copy the build directory of trial ``trial`` to ``dest/PROFILE``; returns that directory.

    Raises:
        EdgecError: no such trial, a trial without a build (stopped early or failed), or a build
            kept on another machine.
    """
    from edgec.search.study import load_study, open_storage, storage_url

    url = storage_url(storage, Path(out)) if storage else _existing_default(Path(out))
    s = load_study(open_storage(url, heartbeat=None), study)
    found = [t for t in s.get_trials(deepcopy=False) if t.number == trial]
    if not found:
        raise EdgecError(f"study '{study}' has no trial {trial} (trials 0..{len(s.trials) - 1})")
    t = found[0]
    result = t.user_attrs.get("result")
    if t.state.name != "COMPLETE" or not result:
        why = (t.user_attrs.get("stopped") or {}).get("reason") or t.user_attrs.get("error") or t.state.name.lower()
        raise EdgecError(f"trial {trial} has no build to export: it is {t.state.name.lower()} ({why})")
    source = Path(result["build_dir"])
    if not (source / "manifest.json").is_file():
        here = socket.gethostname()
        where = f"on host '{result['host']}'" if result.get("host") != here else "here"
        raise EdgecError(f"trial {trial}'s build directory '{source}' ({where}) is not there; run export where "
                         "the search ran, or copy that directory")
    from edgec.util import sha256_file

    artifact = source / result["file"]
    if sha256_file(artifact) != result["sha256"]:
        raise EdgecError(f"'{artifact}' changed since trial {trial} measured it (sha256 differs); it cannot be "
                         "exported as that trial's artifact")
    final = Path(dest) / source.name
    if final.exists():
        raise EdgecError(f"'{final}' exists; pick another --out or remove it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    tmp.rename(final)
    return final
