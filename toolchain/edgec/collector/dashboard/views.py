"""What each dashboard page shows, read from the collector's record with the reads the API uses
(:mod:`edgec.collector.storage.reads`) and the report rows of ``edgec report``
(:func:`edgec.report.build_rows`: the same fp32 baselines). The functions that take a database
connection run on the read pool; the Fleet and Queue pages are made in two steps, the rows read
from the record (kept while it does not change) and what depends on the time of the request.
"""

from __future__ import annotations

from typing import Any

from edgec import report
from edgec.collector.storage import reads

JOB_ORDER = ("leased", "queued", "failed", "done", "cancelled")
QUEUE_LIMIT = 200
HELD_SHOWN = 3  # jobs a device holds, shown by name (the others counted)


def fleet_rows(conn) -> list[dict[str, Any]]:
    """Devices with the jobs they hold, as read from the record (kept while it does not change)."""
    return reads.fleet_devices(conn, HELD_SHOWN)


def fleet(devices: list[dict[str, Any]], offline_after: float, now: float) -> dict[str, Any]:
    """The Fleet page's devices at ``now``: online or offline, busy or idle, last seen how long ago
    (from rows of :func:`fleet_rows`, which are not changed)."""
    out = []
    for row in devices:
        d = dict(row)
        d["seen_s"] = max(0.0, now - d["last_seen"])
        d["more"] = d["held_count"] - len(d["held"])
        d["online"] = not d["revoked"] and d["seen_s"] <= offline_after
        d["state"] = "revoked" if d["revoked"] else ("busy" if d["held"] else "idle") if d["online"] else "offline"
        out.append(d)
    return {"devices": out, "now": now}


def online(devices: list[dict[str, Any]], offline_after: float, now: float) -> tuple[bool, ...]:
    """What of the Fleet page changes with time alone (a device goes offline)."""
    return tuple(not d["revoked"] and now - d["last_seen"] <= offline_after for d in devices)


def queue_rows(conn) -> list[dict[str, Any]]:
    """The newest jobs, as read from the record (kept while it does not change)."""
    return reads.queue_jobs(conn, QUEUE_LIMIT)


def queue_mark(conn) -> tuple:
    return reads.queue_mark(conn, QUEUE_LIMIT)


def queue(jobs: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """The Queue page's jobs grouped by state (running first), with their age at ``now``."""
    jobs = [{**j, "age_s": max(0.0, now - j["created"])} for j in jobs]
    groups = [(state, [j for j in jobs if j["state"] == state]) for state in JOB_ORDER]
    return {"groups": [(s, js) for s, js in groups if js], "count": len(jobs), "now": now}


def results(conn, a: int | None = None, b: int | None = None, artifact: str | None = None) -> dict[str, Any]:
    """The latest result per artifact and device (rows of ``edgec report``; of one artifact by
    sha256), and two of them side by side: ``a`` and ``b`` by result id, else the two newest of
    the newest row's model and device."""
    rows = latest(conn)
    if artifact:
        rows = [r for r in rows if r["artifact_sha256"] == artifact]
    rows.sort(key=lambda r: (r["model"], r["device"], r["precision"] or "", r["file"] or "", r["result_id"]))
    by_id = {r["result_id"]: r for r in rows}
    pair = [by_id.get(a), by_id.get(b)] if a or b else []
    if not any(pair) and rows:
        newest = max(rows, key=lambda r: r["result_id"])
        same = sorted((r for r in rows if (r["model"], r["device"]) == (newest["model"], newest["device"])),
                      key=lambda r: r["result_id"])
        pair = (same[-2:] if len(same) > 1 else same) + [None] * (2 - min(len(same), 2))
    return {"rows": rows, "pair": pair, "compare": compare(*pair) if len(pair) == 2 else None}


def compare(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[tuple[str, str, str, str]] | None:
    """(metric, a, b, b against a) rows for two report rows (None unless both are there)."""
    if a is None or b is None:
        return None
    out = []
    for key, name, fmt in (
            ("latency_median_ms", "p50 latency ms", "{:.4f}"), ("latency_p90_ms", "p90 latency ms", "{:.4f}"),
            ("latency_p99_ms", "p99 latency ms", "{:.4f}"), ("throughput_ips", "throughput inf/s", "{:.0f}"),
            ("energy_mj", "energy mJ/inference", "{:.4f}"), ("power_active_w", "average power W", "{:.3f}"),
            ("size_kib", "size KiB", "{:.1f}"), ("accuracy_pct", "accuracy %", "{:.2f}"),
            ("speedup_vs_fp32", "speed-up vs its fp32", "{:.2f}x")):
        va, vb = a.get(key), b.get(key)
        ratio = "-"
        if va and vb is not None and key != "speedup_vs_fp32":
            ratio = f"{vb / va:.2f}x" if key != "accuracy_pct" else f"{vb - va:+.2f} pts"
        out.append((name, _cell(key, fmt, va, a), _cell(key, fmt, vb, b), ratio))
    return out


def _cell(key: str, fmt: str, value: Any, row: dict[str, Any]) -> str:
    if key in ("energy_mj", "power_active_w") and not row["power_available"]:
        return "no sensor"
    return "-" if value is None else fmt.format(value)


HISTORY_RUNS = 2000  # the newest runs the chart over time shows


def history(conn) -> list[dict[str, Any]]:
    """The newest runs, with what the chart over time draws: the columns it needs (not the
    report documents), and no baselines (``edgec report``'s rows pair every run with every
    other, which a chart of thousands of runs must not pay for)."""
    rows = conn.execute(
        "SELECT r.id, r.created, r.device, r.runtime, r.latency_median_ms, r.latency_p90_ms, r.artifact_sha256, "
        "a.file, a.precision, a.profile, a.source_name, a.build_dir FROM results r "
        "JOIN artifacts a ON a.sha256 = r.artifact_sha256 ORDER BY r.id DESC LIMIT ?", (HISTORY_RUNS,)).fetchall()
    out = []
    for row in map(dict, rows):
        row["model"] = row.pop("source_name") or "?"
        row["file"] = f"{row['profile']}/{row['file']}" if row["profile"] else row["file"]  # as edgec report
        out.append(row)
    return out


def latest(conn) -> list[dict[str, Any]]:
    """The rows of ``edgec report`` (the latest run per artifact and device), the same as
    :func:`edgec.report.record_rows` makes them, the latest runs found in one pass."""
    source = reads.LatestRows(conn)
    return report.build_rows(report.select_results(source), source.artifacts())


def open_search(storage: str):
    """The Optuna storage of ``--search-storage`` (a URL or an existing SQLite file), read-only use.

    Raises:
        EdgecError: optuna missing, no such file, or the storage cannot be opened.
    """
    from pathlib import Path

    from edgec.errors import EdgecError
    from edgec.search.study import open_storage, storage_url

    if "://" not in storage and not Path(storage).is_file():
        raise EdgecError(f"--search-storage '{storage}': no such file; expected an edgec search storage "
                         "(search.db in its --out, or sqlite:///PATH or postgresql://USER@HOST/DB)")
    return open_storage(storage_url(storage, Path(".")), heartbeat=None)


def search(storage, study: str | None) -> dict[str, Any]:
    """The studies of an Optuna storage, and one of them (``study``, else the newest) as
    :func:`edgec.search.report.summary` documents it."""
    from edgec.search.report import summary
    from edgec.search.study import import_optuna, load_study

    optuna = import_optuna()
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if not names:
        return {"studies": [], "doc": None}
    name = study if study in names else names[-1]
    return {"studies": names, "doc": summary(load_study(storage, name))}
