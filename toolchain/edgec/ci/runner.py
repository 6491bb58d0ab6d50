"""One CI run: each selected row restored from the cache or built, measured where asked, gated.

The result is one JSON-ready document (:data:`SCHEMA_VERSION`): per row its figures, budgets and
verdicts, cache state and durations; a summary and the run's verdict. A row whose build failed is
a row with status ``error`` and its message; it never hides the others, which are all built and
reported.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import json
import logging
import time
from pathlib import Path
from typing import Any

from edgec import manifest as manifest_mod
from edgec.ci import gates
from edgec.ci.cache import Cache, Hashes, data_material, default_dir, row_key, tool_versions
from edgec.ci.config import CiConfig, Row
from edgec.errors import EdgecError
from edgec.version import __version__

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DOCUMENT_KIND = "edgec-ci-results"
PASSED, FAILED, ERROR = "passed", "failed", "error"


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How ``edgec ci`` runs (the command's options).

    Attributes:
        only: ``MODEL/TARGET`` patterns selecting rows (all when empty).
        jobs: worker processes building at once (each builds the rows of one model).
        baseline: a previous run's ``--json`` document, for the regression budgets.
        cache_dir: the cache (default :func:`edgec.ci.cache.default_dir`).
        use_cache: False: build every row, neither read nor write the cache.
        device: measure latency budgets on ``local`` or ``ssh://user@host``.
        server: measure latency budgets on a fleet collector's devices (each row's profile).
        token_file: the collector's token file.
        min_seconds: time inferences for at least this long (the agent's default otherwise).
        wait_timeout: with ``server``, how long to wait for each measurement.
    """

    only: tuple[str, ...] = ()
    jobs: int = 1
    baseline: Path | None = None
    cache_dir: Path | None = None
    use_cache: bool = True
    device: str | None = None
    server: str | None = None
    token_file: Path | None = None
    min_seconds: float | None = None
    wait_timeout: float = 3600.0


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a results document written by ``edgec ci --json``.

    Raises:
        EdgecError: unreadable, or not an edgec ci results document of a known schema version.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgecError(f"results file '{path}' does not exist") from None
    except (OSError, ValueError) as exc:
        raise EdgecError(f"cannot read results file '{path}': {exc}") from exc
    if not isinstance(doc, dict) or doc.get("kind") != DOCUMENT_KIND:
        raise EdgecError(f"'{path}' is not an 'edgec ci --json' results document")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise EdgecError(f"'{path}' has results schema_version {doc.get('schema_version')}; this edgec reads "
                         f"{SCHEMA_VERSION}")
    return doc


def run(config: CiConfig, opts: RunOptions, on_event=None) -> dict[str, Any]:
    """Run the selected rows of ``config`` and return the results document.

    Args:
        config: from :func:`edgec.ci.load_config`.
        opts: how to run.
        on_event: ``on_event(row_id, text)`` for progress lines (one per row as it completes).

    Raises:
        EdgecError: a bad ``--only`` pattern or baseline file (before anything is built).
    """
    t_start = time.perf_counter()
    say = on_event or (lambda row_id, text: None)
    rows = config.select(opts.only)
    baseline = load_results(opts.baseline) if opts.baseline else None
    cache = Cache(opts.cache_dir or default_dir()) if opts.use_cache else None
    states: dict[str, dict[str, Any]] = {}
    results: dict[str, dict[str, Any]] = {}
    to_build: list[Row] = []
    hashes = Hashes()
    for row in rows:
        if cache is None:
            states[row.id] = {"state": "off", "key": None, "note": "--no-cache"}
            to_build.append(row)
            continue
        options = row.plan.options.to_json()
        data, why = data_material(options, hashes)
        if why:
            states[row.id] = {"state": "uncacheable", "key": None, "note": why}
            to_build.append(row)
            continue
        key = row_key(model_sha256=hashes.of(row.model.path), data=data, options=options,
                      profile=row.plan.profile.to_json(), out_dir=row.out_dir, versions=tool_versions())
        t0 = time.perf_counter()
        entry, problem = cache.lookup(key)
        if entry is None:
            states[row.id] = {"state": "rebuilt" if problem else "built", "key": key,
                              "note": f"corrupt cache entry removed: {problem}" if problem else None}
            to_build.append(row)
            continue
        cache.restore(key, row.out_dir)
        results[row.id] = {"id": row.id, "ok": True, "error": None, "manifest": manifest_mod.read(row.out_dir),
                           "float_tflite_bytes": entry["meta"].get("float_tflite_bytes"), "reused": [],
                           "wall_s": round(time.perf_counter() - t0, 3)}
        states[row.id] = {"state": "cached", "key": key, "note": None}
        say(row.id, "cached")

    by_id = {row.id: row for row in rows}

    def on_result(result: dict[str, Any]) -> None:
        results[result["id"]] = result
        state = states[result["id"]]
        if result["ok"] and cache is not None and state.get("key"):
            row = by_id[result["id"]]
            try:
                cache.store(state["key"], row.out_dir, {"row": row.id, "float_tflite_bytes": result["float_tflite_bytes"],
                                                         "stages_s": result["manifest"].get("timings_s")})
            except OSError as exc:
                log.warning("%s: could not store the build in the cache (%s)", row.id, exc)
                state["note"] = f"not stored in the cache: {exc}"
        if result["ok"]:
            shared = f" (shared: {', '.join(result['reused'])})" if result["reused"] else ""
            say(result["id"], f"{state['state']} in {result['wall_s']:.1f} s{shared}")
        else:
            say(result["id"], f"error: {result['error']}")

    if to_build:
        from edgec.ci.worker import run_groups

        groups: dict[str, list[dict[str, Any]]] = collections.OrderedDict()
        for row in to_build:
            groups.setdefault(row.model.name, []).append(
                {"id": row.id, "model": str(row.model.path), "profile": row.target.profile, "options": row.options,
                 "out_dir": str(row.out_dir)})
        run_groups(list(groups.values()), opts.jobs, on_result, on_start=lambda row_id: say(row_id, "building"))

    latency, measure_errors = _measure(rows, results, opts, say)
    base_rows = {r["id"]: r for r in baseline["rows"]} if baseline else {}
    docs = []
    for row in rows:
        docs.append(_row_document(row, results[row.id], states[row.id], latency.get(row.id),
                                  measure_errors.get(row.id, {}), base_rows, baseline is not None))
    return document(docs, config_path=str(config.path), config_sha256=config.sha256,
                    baseline=_baseline_ref(opts.baseline, baseline), measured_on=opts.server or opts.device,
                    only=list(opts.only), duration_s=time.perf_counter() - t_start)


def _baseline_ref(path: Path | None, doc: dict[str, Any] | None) -> dict[str, Any] | None:
    if doc is None:
        return None
    return {"path": str(path), "created": doc.get("created"), "config_sha256": (doc.get("config") or {}).get("sha256")}


def _row_document(row: Row, result: dict[str, Any], cache_state: dict[str, Any], latency: dict[str, Any] | None,
                  measure_errors: dict[str, str], base_rows: dict[str, dict[str, Any]],
                  have_baseline: bool) -> dict[str, Any]:
    manifest = result.get("manifest")
    stages = (manifest or {}).get("timings_s") or {}
    doc: dict[str, Any] = {
        "id": row.id, "model": row.model.name, "target": row.target.name, "profile": row.plan.profile.id,
        "kind": row.kind, "precision": row.plan.precision.value, "out_dir": str(row.out_dir),
        "status": None, "error": result.get("error"),
        "cache": cache_state,
        "durations_s": {"wall": result.get("wall_s"), "stages": stages,
                        "standalone": round(sum(stages.values()), 3) if stages else result.get("wall_s"),
                        "shared": list(result.get("reused") or [])},
        "figures": None, "budgets": [], "warnings": list((manifest or {}).get("warnings") or []),
    }
    if not result.get("ok"):
        doc["status"] = ERROR
        doc["budgets"] = [{"name": name, "limit": limit, "value": None, "verdict": gates.NOT_MEASURED,
                           "message": "not evaluated: the build failed"} for name, limit in row.budgets.items()]
        return doc
    figs = gates.figures(manifest, result.get("float_tflite_bytes"))
    if latency:
        figs.update(latency)
    doc["figures"] = figs
    base_doc = base_rows.get(row.id)
    base = (base_doc or {}).get("figures")
    if not have_baseline:
        why = "no --baseline given"
    elif base_doc is None:
        why = f"the baseline has no row {row.id}"
    else:
        why = f"the baseline row {row.id} has no figures (its build failed)"
    verdicts = gates.evaluate(row.budgets, figs, base, no_baseline=why, failed=measure_errors)
    verdicts += gates.check_verdicts(manifest.get("checks") or [])
    doc["budgets"] = verdicts
    if base:
        doc["baseline"] = {k: base.get(k) for k in ("bytes", "artifact_accuracy", "accuracy_drop_points",
                                                    "latency_p90_ms", "latency_std_ms", "sha256")}
    doc["status"] = FAILED if any(v["verdict"] == gates.FAILED for v in verdicts) else PASSED
    return doc


def _measure(rows: list[Row], results: dict[str, dict[str, Any]], opts: RunOptions,
             say) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """Latency of each built row with a latency budget, on the device or fleet given; why measuring
    failed, for each row where it did (without a device the budgets say so themselves)."""
    wanted = [row for row in rows if results[row.id].get("ok")
              and any(gates.BUDGETS[name].latency for name in row.budgets)]
    latency: dict[str, dict[str, Any]] = {}
    errors: dict[str, dict[str, str]] = {}
    if not wanted:
        return latency, errors
    if not (opts.device or opts.server):
        return latency, errors  # each latency budget says: no device to measure on
    bench = {"min_seconds": opts.min_seconds} if opts.min_seconds is not None else {}
    if opts.server:
        return _measure_on_fleet(wanted, opts, bench, say)
    from edgec import measure

    for row in wanted:
        try:
            m = measure.measure(row.out_dir, opts.device, store=False, **bench)
        except EdgecError as exc:
            errors[row.id] = {"latency_p90_ms": str(exc)}
            say(row.id, f"not measured: {exc}")
            continue
        latency[row.id] = gates.latency_figures(m.report, m.device)
        say(row.id, f"p90 {latency[row.id]['latency_p90_ms']:.4f} ms on {m.device}")
    return latency, errors


def _measure_on_fleet(rows: list[Row], opts: RunOptions, bench: dict[str, Any], say):
    from edgec import measure
    from edgec.fleet.client import Client
    from edgec.fleet.tokens import client_token

    latency: dict[str, dict[str, Any]] = {}
    errors: dict[str, dict[str, str]] = {}
    request = measure.FleetRequest(server=opts.server, token_file=opts.token_file, bench=bench)
    with Client(opts.server, client_token(opts.token_file)) as client:
        jobs = {}
        for row in rows:
            try:
                jobs[row.id] = measure.queue_on_fleet(client, [row.out_dir], request)[0]
            except EdgecError as exc:
                errors[row.id] = {"latency_p90_ms": f"queueing on {opts.server} failed: {exc}"}
        for row_id, job in jobs.items():
            done, failures = measure.collect_from_fleet(client, [job], opts.wait_timeout)
            if not done:
                errors[row_id] = {"latency_p90_ms": f"the fleet did not measure it: {'; '.join(failures)}"}
                say(row_id, f"not measured: {'; '.join(failures)}")
                continue
            latency[row_id] = gates.latency_figures(done[0].report, done[0].device)
            say(row_id, f"p90 {latency[row_id]['latency_p90_ms']:.4f} ms on {done[0].device}")
    return latency, errors


def document(rows: list[dict[str, Any]], *, config_path: str | None, config_sha256: str | None,
             baseline: dict[str, Any] | None, measured_on: str | None, only: list[str],
             duration_s: float, merged_from: list[str] | None = None) -> dict[str, Any]:
    """The results document of ``rows`` (also what ``edgec ci merge`` writes)."""
    statuses = collections.Counter(r["status"] for r in rows)
    cache_states = collections.Counter((r.get("cache") or {}).get("state") for r in rows)
    verdicts = collections.Counter(v["verdict"] for r in rows for v in r["budgets"])
    doc = {
        "schema_version": SCHEMA_VERSION, "kind": DOCUMENT_KIND, "edgec_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": {"path": config_path, "sha256": config_sha256},
        "baseline": baseline, "measured_on": measured_on, "only": only,
        "verdict": PASSED if statuses[FAILED] == 0 and statuses[ERROR] == 0 else FAILED,
        "summary": {"rows": len(rows), "passed": statuses[PASSED], "failed": statuses[FAILED],
                    "errors": statuses[ERROR], "cached": cache_states["cached"],
                    "built": len(rows) - cache_states["cached"] - statuses[ERROR],
                    "budgets": {k: verdicts[k] for k in (gates.PASSED, gates.FAILED, gates.NOT_MEASURED,
                                                         gates.NO_BASELINE)}},
        "duration_s": round(duration_s, 3),
        "rows": rows,
    }
    if merged_from is not None:
        doc["merged_from"] = merged_from
    return doc
