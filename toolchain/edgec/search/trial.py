"""One trial of a search: draw a configuration, stop it early when it cannot make it, else build,
verify and measure it on the device, and hand Optuna its objective values.

The order of a trial:

1. the configuration (and, with ``--builder``, the model's hyperparameters and training);
2. its key: a finished trial of the study with the same key gives its result at once;
3. constraints first: with ``--max-bytes`` / ``--max-latency-p50-ms``, a cheap build of the
   configuration without fine-tuning (one epoch on 64 samples; with ``--builder`` the untrained
   model) is measured, and a trial that breaks a limit stops before any training;
4. ``--builder``: training, judged by Hyperband at its rungs;
5. the compression steps at Hyperband's rungs (a build with that many fine-tune epochs each, its
   artifact's accuracy judged), then the full build;
6. the measurement (latency repeated until its interval ranks it against the front; energy);
7. constraints on the result (accuracy drop, latency, bytes, the build's own checks).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.search import cache as cache_mod
from edgec.search import interrupts
from edgec.search import space as space_mod
from edgec.search.objectives import front_trials, objective_value
from edgec.search.study import BASELINES_ATTR, Surplus, check_claim

log = logging.getLogger(__name__)

PROBE_SAMPLES = 64
PROBE_CALIB_SAMPLES = 32


@dataclasses.dataclass
class Timer:
    """Where a trial's time went (seconds)."""

    build: float = 0.0
    measure: float = 0.0
    train: float = 0.0
    total: float = 0.0
    builds: int = 0
    builds_reused: int = 0
    measurements_reused: int = 0

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in dataclasses.asdict(self).items()}


class BuildFailed(EdgecError):
    """``edgec.build`` refused the configuration: the same key fails the same way (builds are
    deterministic), so a repeated configuration fails at once with the same reason."""


class Stopped(Exception):
    """A trial stops early (constraint or Hyperband); ``detail`` says where and why."""

    def __init__(self, detail: dict[str, Any]):
        super().__init__(detail.get("reason", ""))
        self.detail = detail


@dataclasses.dataclass
class Context:
    """What every trial of one worker shares: the study's settings, data, cache and device."""

    profile: Any  # edgec.profiles.Profile
    space: space_mod.Space
    objectives: list[str]
    constraints: dict[str, float | None]  # max_accuracy_drop, max_latency_p50_ms, max_bytes
    device: Any  # edgec.search.device.Device
    out: Path
    seed: int
    eval: str
    fine_tune: str | None
    calib: str | None
    model: Path | None = None  # model mode
    builder: Any = None  # the builder function (builder mode)
    builder_id: dict[str, Any] | None = None
    train: str | None = None
    model_key: str | None = None
    data_keys: dict[str, str | None] = dataclasses.field(default_factory=dict)
    cache: cache_mod.BuildCache | None = None
    probe_fine_tune: str | None = None
    custom_objects: tuple[str, ...] = ()
    _train_data: Any = None
    _eval_data: Any = None

    def __post_init__(self):
        self.cache = cache_mod.BuildCache(self.out / "builds", self.profile.id)
        self.data_keys = {name: cache_mod.data_digest(getattr(self, name)) for name in ("eval", "fine_tune", "calib",
                                                                                          "train")}
        if self.model is not None:
            self.model_key = cache_mod.data_digest(self.model)

    # -- build options and keys ------------------------------------------------------------------

    def options(self, config: space_mod.Config, **changes: Any) -> dict[str, Any]:
        """The ``edgec.build`` options of ``config`` with the search's data, seed and ``changes``."""
        opts = {**config.build_options(), "seed": self.seed, "eval": self.eval}
        if self.custom_objects:
            opts["custom_objects"] = list(self.custom_objects)
        if config.compresses:
            opts["fine_tune"] = self.fine_tune
        if config.precision == "int8" and not (config.qat and not self.calib):
            opts["calib"] = self.calib or self.fine_tune
        opts.update(changes)
        return {k: v for k, v in opts.items() if v is not None}

    def build_key(self, model_key: str, options: dict[str, Any]) -> str:
        keyed = {k: (cache_mod.data_digest(v) if k in ("eval", "fine_tune", "calib") else v)
                 for k, v in options.items()}
        if options.get("custom_objects"):  # the code, not only its name
            keyed["custom_objects"] = [cache_mod.data_digest(s) if str(s).endswith(".py") else s
                                       for s in options["custom_objects"]]
        return cache_mod.digest({"model": model_key, "profile": cache_mod.profile_doc(self.profile), "options": keyed,
                                 "versions": cache_mod.library_versions()})

    def measure_key(self) -> str:
        return cache_mod.digest(self.device.key())

    # -- building and measuring ------------------------------------------------------------------

    def build(self, model: Path, model_key: str, options: dict[str, Any], timer: Timer):
        """A cached build: ``(build_dir, manifest, build_key)``."""
        key = self.build_key(model_key, options)
        interrupts.checkpoint()
        t0 = time.perf_counter()
        try:
            build_dir, manifest, reused = self.cache.build(key, model, self.profile.id, options)
        except EdgecError as exc:
            raise BuildFailed(f"the build refused {_options_text(options)}: {exc}") from exc
        finally:
            timer.build += time.perf_counter() - t0
        timer.builds += 1
        timer.builds_reused += int(reused)
        interrupts.checkpoint()
        return build_dir, manifest, key

    def measure(self, build_dir: Path, build_key: str, against: list[float], timer: Timer,
                limit: float | None = None) -> dict[str, Any]:
        """A cached measurement of the build (see :meth:`edgec.search.device.Device.measure`)."""
        mkey = self.measure_key()
        found = self.cache.measurement(build_key, mkey)
        if found is not None:
            timer.measurements_reused += 1
            return found
        t0 = time.perf_counter()
        record = self.device.measure(build_dir, against, limit)
        timer.measure += time.perf_counter() - t0
        interrupts.checkpoint()
        self.cache.keep_measurement(build_key, mkey, record)
        return record

    def result(self, build_dir: Path, manifest: dict[str, Any], measurement: dict[str, Any],
               fp32_bytes: int | None) -> dict[str, Any]:
        """A trial's (or a baseline's) result from its build and its measurement."""
        from edgec.inspection import compressed_sizes

        ver = manifest.get("verification") or {}
        if ver.get("artifact_accuracy") is None:
            raise EdgecError(f"the build in {build_dir} has no accuracy: --eval data '{self.eval}' needs labels (y)")
        art = manifest["artifacts"][0]
        zstd = compressed_sizes((build_dir / art["file"]).read_bytes()).get("zstd")
        params = int((manifest.get("source") or {}).get("params") or 0)
        totals = (manifest.get("optimization") or {}).get("totals") or {}
        nonzero = params
        if totals.get("kernel_params"):
            nonzero = params - int(round(totals["kernel_params"] * totals.get("kernel_zero_share", 0.0)))
        if fp32_bytes is None:
            fp32_bytes = totals.get("float_tflite_bytes")
        return {
            "accuracy": round(ver["artifact_accuracy"] * 100, 4), "float_accuracy": round(ver["float_accuracy"] * 100, 4),
            "drop": round(ver["accuracy_drop_points"], 4), "latency": measurement, "bytes": int(art["bytes"]),
            "zstd_bytes": zstd, "params": params, "nonzero_params": nonzero,
            "compression": round(fp32_bytes / zstd, 3) if fp32_bytes and zstd else None,
            "precision": manifest.get("precision"), "file": art["file"], "sha256": art["sha256"],
            "build_dir": str(build_dir.resolve()), "host": socket.gethostname(),
            "checks_failed": [c["message"] for c in manifest.get("checks", []) if not c["passed"]
                              and c["name"] != "max_accuracy_drop"],
        }

    # -- data for probes and --builder -----------------------------------------------------------

    def probe_data(self) -> str | None:
        """The first 64 labelled samples of ``--fine-tune`` (an .npz), for cheap probe builds."""
        if self.probe_fine_tune is None and self.fine_tune:
            self.probe_fine_tune = self.fine_tune
            if str(self.fine_tune).endswith(".npz") and Path(self.fine_tune).is_file():
                target = self.out / "data" / f"probe-{self.data_keys['fine_tune'][:16]}.npz"
                if not target.is_file():
                    with np.load(self.fine_tune) as doc:
                        # x and y, or one array per input of a model with several inputs
                        arrays = {k: doc[k][:PROBE_SAMPLES] for k in doc.files if doc[k].ndim}
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_name(f".{target.name}.{os.getpid()}.npz")
                    np.savez(tmp, **arrays)
                    os.replace(tmp, target)
                self.probe_fine_tune = str(target)
        return self.probe_fine_tune

    def training_data(self, model):
        from edgec.search import builder

        if self._train_data is None:
            self._train_data = builder.load_data(model, self.train, "training", self.seed)
            self._eval_data = builder.load_data(model, self.eval, "eval", self.seed)
        return self._train_data, self._eval_data

    def baselines(self) -> list[dict[str, Any]]:
        """fp32 and plain int8 PTQ of the model (model mode), built and measured like trials."""
        timer = Timer()
        out = []
        plain = [("fp32", "fp32")]
        if "int8" in self.profile.precisions:
            plain.append(("int8 PTQ", "int8"))
        fp32_bytes = None
        for name, precision in plain:
            config = space_mod.Config(precision=precision, prune=None, prune_structure=None, cluster=None, qat=False,
                                      epochs=None, lr=None, batch_size=None, distill=False, extras={})
            options = self.options(config)
            build_dir, manifest, key = self.build(self.model, self.model_key, options, timer)
            measurement = self.measure(build_dir, key, [], timer)
            result = self.result(build_dir, manifest, measurement, fp32_bytes)
            if precision == "fp32":
                fp32_bytes = result["bytes"]
                result["compression"] = round(fp32_bytes / result["zstd_bytes"], 3)
            out.append({"name": name, "label": config.label(), **result})
        return out


class Runner:
    """The Optuna objective of one worker."""

    def __init__(self, ctx: Context, study, stopper, n_trials: int, worker: str, journal: Path | None = None,
                 on_stage=None):
        self.ctx = ctx
        self.study = study
        self.stopper = stopper
        self.n_trials = n_trials
        self.worker = worker
        self.journal = journal
        self.on_stage = on_stage  # called with (trial number, what the trial starts now)
        self.current: int | None = None
        self._fp32_bytes: int | None = None

    def _stage(self, trial, text: str) -> None:
        """Say what a trial starts now: its steps take minutes, and a silent one looks stuck."""
        if self.on_stage is not None:
            self.on_stage(trial.number, text)

    def fp32_bytes(self) -> int | None:
        if self._fp32_bytes is None:
            for base in self.study.user_attrs.get(BASELINES_ATTR) or []:
                if base.get("precision") == "fp32":
                    self._fp32_bytes = base["bytes"]
        return self._fp32_bytes

    def __call__(self, trial):
        import optuna

        from edgec.search.study import write_journal

        self.current = trial.number
        timer = Timer()
        t0 = time.perf_counter()
        try:
            check_claim(self.study, trial, self.n_trials)
            trial.set_user_attr("worker", self.worker)
            trial.set_user_attr("rungs", {})  # a retried trial starts afresh
            for key in ("stopped", "error", "build_failed", "result", "reused_from"):
                if key in trial.user_attrs:
                    trial.set_user_attr(key, None)
            retry_of = trial.storage.get_trial_system_attrs(trial._trial_id).get("failed_trial")
            write_journal(self.journal, {"event": "start", "trial": trial.number, "worker": self.worker,
                                    "retry_of": retry_of})
            with interrupts.immediate():
                return self._run(trial, timer)
        except Stopped as stop:
            trial.set_user_attr("stopped", stop.detail)
            raise optuna.TrialPruned(stop.detail.get("reason", "")) from None
        except Surplus:
            raise
        except EdgecError as exc:
            trial.set_user_attr("error", str(exc))
            if isinstance(exc, BuildFailed):
                trial.set_user_attr("build_failed", True)
            log.warning("trial %d failed: %s", trial.number, exc)
            raise
        except Exception as exc:  # a bug: the trial fails with the reason, the traceback goes to the log
            trial.set_user_attr("error", f"internal error ({type(exc).__name__}: {exc})")
            log.warning("trial %d failed", trial.number, exc_info=True)
            raise
        except KeyboardInterrupt:
            # the worker is stopped: a trial that had its configuration goes back to the queue for the next start
            if trial.params:
                self.study.enqueue_trial(dict(trial.params), user_attrs={"interrupted_trial": trial.number})
            raise
        finally:
            timer.total = time.perf_counter() - t0
            try:
                trial.set_user_attr("timings", timer.to_json())
            except Exception:  # the storage went away with the interrupt; the trial is retried anyway
                pass
            _clear_session()

    # -- the trial ---------------------------------------------------------------------------------

    def _run(self, trial, timer: Timer):
        from edgec.search import builder as builder_mod

        ctx = self.ctx
        keras_model = hp = training = None
        if ctx.builder is not None:
            hp = builder_mod.HP(trial)
            t0 = time.perf_counter()
            keras_model = builder_mod.make(ctx.builder, hp, ctx.seed)  # the model's own work: counted as training
            timer.train += time.perf_counter() - t0
            training = space_mod.sample_training(trial, ctx.space)
        config = space_mod.sample(trial, ctx.space)
        if ctx.builder is not None:
            model_key = cache_mod.digest({"builder": ctx.builder_id, "hp": hp.values, "training": training.to_json(),
                                          "train": ctx.data_keys["train"], "seed": ctx.seed,
                                          "versions": cache_mod.library_versions()})
            trial.set_user_attr("hp", hp.values)
            trial.set_user_attr("training", training.to_json())
        else:
            model_key = ctx.model_key
        final = ctx.options(config)
        build_key = ctx.build_key(model_key, final)
        key = cache_mod.digest({"build": build_key, "measure": ctx.measure_key()})
        label = config.label() if training is None else f"{_hp_label(hp.values)} | {training.label()} | {config.label()}"
        trial.set_user_attr("config", config.to_json())
        trial.set_user_attr("label", label)
        trial.set_user_attr("key", key)

        reused = self._reuse(trial, key)
        if reused is not None:
            return reused

        self._stage(trial, label)
        model_path = ctx.model
        if ctx.builder is not None:
            if self._has_size_or_latency_limit():
                init_key = cache_mod.digest({"builder": ctx.builder_id, "hp": hp.values, "seed": ctx.seed,
                                             "versions": cache_mod.library_versions(), "untrained": True})
                init_path = _save_model(keras_model, ctx.out / "models" / f"{init_key[:24]}-init.keras")
                self._stage(trial, "the untrained model against the size and latency limits")
                self._probe(trial, config, init_path, init_key, timer)
            self._stage(trial, f"training ({training.label()})")
            model_path = self._train(trial, keras_model, training, model_key, timer)
        elif self._has_size_or_latency_limit() and config.compresses:
            self._stage(trial, "a quick build against the size and latency limits")
            self._probe(trial, config, model_path, model_key, timer)

        if self.stopper is not None and config.compresses:
            for epochs in self.stopper.rungs(trial, "fine_tune", config.epochs):
                self._stage(trial, f"Hyperband rung: a build with {epochs} fine-tune epoch(s), judged on its accuracy")
                _, manifest, _ = ctx.build(model_path, model_key, ctx.options(config, epochs=epochs), timer)
                accuracy = round(manifest["verification"]["artifact_accuracy"] * 100, 4)
                stop, detail = self.stopper.should_stop(trial, "fine_tune", epochs, accuracy)
                if stop:
                    raise Stopped({"by": "hyperband", "stage": "fine_tune", "epochs": epochs, **detail,
                                   "reason": f"accuracy {accuracy:.2f} % after {epochs} fine-tune epoch(s) is below "
                                             f"{detail.get('needed', 0):.2f} % (rung {detail['rung']})"})

        self._stage(trial, "the full build, verified on the eval data")
        build_dir, manifest, build_key = ctx.build(model_path, model_key, final, timer)
        self._stage(trial, f"measuring on {ctx.device.where()}")
        measurement = ctx.measure(build_dir, build_key, self._front_latencies(), timer,
                                  ctx.constraints.get("max_latency_p50_ms"))
        result = ctx.result(build_dir, manifest, measurement, self.fp32_bytes())
        if "energy" in ctx.objectives and measurement["energy_mj"] is None:
            raise EdgecError(f"energy is an objective but this measurement has none: {measurement['power'].get('reason')}")
        trial.set_user_attr("result", result)
        self._constrain(trial, result)
        return tuple(objective_value(name, result) for name in ctx.objectives)

    def _reuse(self, trial, key: str):
        """The values of a finished trial with the same key (its result copied), or ``None``; the
        error of a failed one with the same key is raised again (builds are deterministic)."""
        for other in self.study.get_trials(deepcopy=False):
            if other.number == trial.number or other.user_attrs.get("key") != key:
                continue
            if other.state.name == "COMPLETE" and other.user_attrs.get("result"):
                result = other.user_attrs["result"]
                trial.set_user_attr("result", result)
                trial.set_user_attr("reused_from", other.number)
                self._constrain(trial, result)
                return tuple(objective_value(name, result) for name in self.ctx.objectives)
            if other.state.name == "FAIL" and other.user_attrs.get("build_failed"):
                trial.set_user_attr("reused_from", other.number)
                raise BuildFailed(other.user_attrs["error"])
        return None

    def _has_size_or_latency_limit(self) -> bool:
        c = self.ctx.constraints
        return c.get("max_bytes") is not None or c.get("max_latency_p50_ms") is not None

    def _probe(self, trial, config: space_mod.Config, model_path: Path, model_key: str, timer: Timer) -> None:
        """Constraints first: build the configuration without real fine-tuning and stop the trial when
        its bytes or latency already break a limit (they do not change with more epochs)."""
        ctx = self.ctx
        changes: dict[str, Any] = {"eval": None, "calib_samples": PROBE_CALIB_SAMPLES}
        if config.compresses:
            changes.update(epochs=1, fine_tune=ctx.probe_data())
            if config.prune and not config.prune_structure and "prune_schedule" not in config.extras:
                changes["prune_schedule"] = "constant"  # the target sparsity from the first step
        options = ctx.options(config, **changes)
        if config.precision == "int8" and "calib" not in options:
            options["calib"] = ctx.probe_data()
        build_dir, manifest, build_key = ctx.build(model_path, model_key, options, timer)
        size = int(manifest["artifacts"][0]["bytes"])
        limit_bytes, limit_ms = ctx.constraints.get("max_bytes"), ctx.constraints.get("max_latency_p50_ms")
        probe: dict[str, Any] = {"bytes": size, "build_dir": str(build_dir)}
        if limit_bytes is not None and size > limit_bytes:
            trial.set_constraint("bytes", size - limit_bytes)
            raise Stopped({"by": "constraint", "stage": "probe", "probe": probe,
                           "reason": f"{size} artifact bytes > --max-bytes {limit_bytes:g} (before fine-tuning)"})
        if limit_ms is not None:
            m = ctx.measure(build_dir, build_key, [], timer, limit=limit_ms)
            probe["p50_ms"], probe["ci_ms"] = m["p50_ms"], m["ci_ms"]
            if m["p50_ms"] > limit_ms:
                trial.set_constraint("latency_ms", m["p50_ms"] - limit_ms)
                raise Stopped({"by": "constraint", "stage": "probe", "probe": probe,
                               "reason": f"latency {m['p50_ms']:.4f} ms > --max-latency-p50-ms {limit_ms:g} "
                                         "(before fine-tuning)"})
        trial.set_user_attr("probe", probe)

    def _train(self, trial, model, training, model_key: str, timer: Timer) -> Path:
        """Train the ``--builder`` model (cached by key), judged by Hyperband at its rungs."""
        from edgec.search import builder as builder_mod

        ctx = self.ctx
        path = ctx.out / "models" / f"{model_key[:24]}.keras"
        sidecar = path.with_suffix(".json")
        rungs = self.stopper.rungs(trial, "train", training.epochs) if self.stopper is not None else []

        def judge(epoch: int, accuracy: float) -> bool:
            if self.stopper is None:
                return False
            stop, detail = self.stopper.should_stop(trial, "train", epoch, accuracy)
            if stop:
                judge.detail = {"by": "hyperband", "stage": "train", "epochs": epoch, **detail,
                                "reason": f"eval accuracy {accuracy:.2f} % after {epoch} training epoch(s) is below "
                                          f"{detail.get('needed', 0):.2f} % (rung {detail['rung']})"}
            return stop

        judge.detail = None
        if path.is_file() and sidecar.is_file():  # trained before: the same rungs judged on the recorded values
            recorded = json.loads(sidecar.read_text())
            for epoch in rungs:
                value = recorded["rungs"].get(str(epoch))
                if value is not None and judge(epoch, value):
                    raise Stopped(judge.detail)
            trial.set_user_attr("training_result", recorded["result"])
            return path
        t0 = time.perf_counter()
        train_data, eval_data = ctx.training_data(model)
        values: dict[str, float] = {}

        def recording(epoch: int, accuracy: float) -> bool:
            values[str(epoch)] = accuracy
            return judge(epoch, accuracy)

        try:
            info = builder_mod.train(model, train_data, eval_data, training, ctx.seed, rungs, recording)
        finally:
            timer.train += time.perf_counter() - t0
        trial.set_user_attr("training_result", info)
        if judge.detail is not None:
            raise Stopped(judge.detail)
        t0 = time.perf_counter()
        _save_model(model, path)
        timer.train += time.perf_counter() - t0
        tmp = sidecar.with_name(f".{sidecar.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"rungs": values, "result": info}))
        os.replace(tmp, sidecar)
        return path

    def _front_latencies(self) -> list[float]:
        """The latencies of the study's current front (what a new measurement must rank against)."""
        front = front_trials(self.study.get_trials(deepcopy=False), self.ctx.objectives)
        return [t.user_attrs["result"]["latency"]["p50_ms"] for t in front]

    def _constrain(self, trial, result: dict[str, Any]) -> None:
        c = self.ctx.constraints
        if c.get("max_accuracy_drop") is not None:
            trial.set_constraint("accuracy_drop", result["drop"] - c["max_accuracy_drop"])
        if c.get("max_latency_p50_ms") is not None:
            trial.set_constraint("latency_ms", result["latency"]["p50_ms"] - c["max_latency_p50_ms"])
        if c.get("max_bytes") is not None:
            trial.set_constraint("bytes", result["bytes"] - c["max_bytes"])
        if result.get("checks_failed"):
            trial.set_constraint("checks", float(len(result["checks_failed"])))


def _options_text(options: dict[str, Any]) -> str:
    shown = {k: v for k, v in options.items() if k not in ("eval", "calib", "fine_tune", "seed")}
    return " ".join(f"{k}={v}" for k, v in shown.items())


def _hp_label(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def _save_model(model, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.keras")
        model.save(tmp)
        os.replace(tmp, path)
    return path


def _clear_session() -> None:
    import sys

    if "tf_keras" in sys.modules:
        sys.modules["tf_keras"].backend.clear_session()
