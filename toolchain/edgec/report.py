"""``edgec report``: measured latency (and energy) against accuracy and size, one point per
artifact and device, with speed-up and compression against the float artifact of the same model.

The float baseline of a result is the fp32 artifact built from the same source model (same
source sha256 in the manifest): its latency on the same device gives the speed-up (same
artifact format preferred, then same runtime, then same thread count; :func:`fp32_baseline`, the
rule ``edgec profile`` uses too), its file size the compression rate.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError

REPORT_VERSION = 1
FLOAT = "fp32"

COLUMNS = [
    # key, header, format
    ("model", "model", "{}"),
    ("device", "device", "{}"),
    ("file", "artifact", "{}"),
    ("precision", "precision", "{}"),
    ("runtime", "runtime", "{}"),
    ("size_kib", "size KiB", "{:.1f}"),
    ("compression_vs_fp32", "compression x", "{:.2f}"),
    ("accuracy_pct", "accuracy %", "{:.2f}"),
    ("accuracy_drop_points", "drop pts", "{:.2f}"),
    ("latency_median_ms", "median ms", "{:.4f}"),
    ("latency_p90_ms", "p90 ms", "{:.4f}"),
    ("latency_p99_ms", "p99 ms", "{:.4f}"),
    ("speedup_vs_fp32", "speedup x", "{:.2f}"),
    ("throughput_ips", "inf/s", "{:.0f}"),
    ("energy_mj", "mJ/inf", "{:.4f}"),
    ("power_active_w", "W active", "{:.3f}"),
]


# The terminal table keeps the columns that fit 160 characters; JSON, CSV and Markdown have all.
TABLE_KEYS = ("model", "device", "file", "precision", "size_kib", "compression_vs_fp32", "accuracy_pct",
              "latency_median_ms", "latency_p90_ms", "latency_p99_ms", "speedup_vs_fp32", "energy_mj")


def _pick(candidates: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    """Prefer the same format, then the same runtime, then the same thread count, then the newest."""
    if not candidates:
        return None
    return min(candidates, key=lambda c: (c.get("format") != row.get("format"), c.get("runtime") != row.get("runtime"),
                                          c.get("threads") != row.get("threads"), -(c.get("id") or 0)))


def fp32_baseline(row: dict[str, Any], candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The fp32 result ``row`` is compared with: itself when it is fp32, else an fp32 result of the
    same source model (sha256) on the same device, chosen by :func:`_pick`. Rows and candidates are
    results-store rows (or :meth:`edgec.measure.Measurement.row`)."""
    if row.get("precision") == FLOAT:
        return row
    return _pick([c for c in candidates if c.get("source_sha256") and c["source_sha256"] == row.get("source_sha256")
                  and c.get("precision") == FLOAT and c.get("device") == row.get("device")], row)


def select_results(store, *, device: str | None = None, model: str | None = None,
                   every_run: bool = False) -> list[dict[str, Any]]:
    """The results-store rows a report shows: the latest run per artifact and device (every run
    with ``every_run``), of one device, of the models whose name contains ``model`` or whose source
    sha256 starts with it."""
    rows = store.rows(device=device, latest=not every_run)
    if model:
        rows = [r for r in rows if model in (r["source_name"] or "") or (r["source_sha256"] or "").startswith(model)]
    return rows


def build_rows(results: list[dict[str, Any]], artifacts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Report rows from store rows: baselines, speed-up, compression and display fields."""
    out = []
    for r in results:
        base = fp32_baseline(r, results)
        base_art = _pick([a for a in artifacts if a["source_sha256"] and a["source_sha256"] == r["source_sha256"]
                          and a["precision"] == FLOAT], r)
        row = {
            "result_id": r["id"],
            "created": r["created"],
            "model": r["source_name"] or "?",
            "source_sha256": r["source_sha256"],
            "profile": r["profile"],
            "device": r["device"],
            "device_model": r["device_model"],
            "file": f"{r['profile']}/{r['file']}" if r["profile"] else r["file"],
            "build_dir": r["build_dir"],
            "artifact_sha256": r["artifact_sha256"],
            "format": r["format"],
            "precision": r["precision"],
            "runtime": r["runtime"],
            "runtime_version": r["runtime_version"],
            "threads": r["threads"],
            "bytes": r["bytes"],
            "size_kib": r["bytes"] / 1024 if r["bytes"] is not None else None,
            "accuracy_pct": r["accuracy"] * 100 if r["accuracy"] is not None else None,
            "accuracy_drop_points": r["accuracy_drop"],
            "runs": r["runs"],
            "latency_min_ms": r["latency_min_ms"],
            "latency_median_ms": r["latency_median_ms"],
            "latency_mean_ms": r["latency_mean_ms"],
            "latency_p90_ms": r["latency_p90_ms"],
            "latency_p99_ms": r["latency_p99_ms"],
            "latency_std_ms": r["latency_std_ms"],
            "throughput_ips": r["throughput_ips"],
            "power_available": bool(r["power_available"]),
            "power_active_w": r["power_active_w"],
            "power_idle_w": r["power_idle_w"],
            "energy_mj": r["energy_mj"],
            "energy_above_idle_mj": r["energy_above_idle_mj"],
            "baseline_result_id": base["id"] if base else None,
            "baseline_threads": base["threads"] if base else None,
            "speedup_vs_fp32": (base["latency_median_ms"] / r["latency_median_ms"]
                                if base and r["latency_median_ms"] else None),
            "compression_vs_fp32": (base_art["bytes"] / r["bytes"] if base_art and base_art["bytes"] and r["bytes"] else None),
        }
        out.append(row)
    return out


def load_rows(db: str | Path | None = None, *, device: str | None = None, model: str | None = None,
              every_run: bool = False) -> list[dict[str, Any]]:
    """Rows for the report from the results store (latest run per artifact and device)."""
    from edgec.results import ResultsStore

    store = ResultsStore(db)
    rows = build_rows(select_results(store, device=device, model=model, every_run=every_run), store.artifacts())
    if not rows:
        where = f" for device {device}" if device else ""
        where += f" for model {model}" if model else ""
        raise EdgecError(f"no results{where} in '{store.path}'; measure something with 'edgec profile' first")
    return rows


class _RecordRows:
    """A collector record's results as :func:`select_results` reads a results store."""

    def __init__(self, conn):
        self.conn = conn

    def rows(self, *, device: str | None = None, latest: bool = True) -> list[dict[str, Any]]:
        from edgec import results

        return results.query_rows(self.conn, device=device, latest=latest)

    def artifacts(self) -> list[dict[str, Any]]:
        from edgec import results

        return results.query_artifacts(self.conn)


def record_rows(conn, device: str | None, model: str | None, every_run: bool) -> list[dict[str, Any]]:
    """The rows of ``edgec report --server`` from a collector's record (a connection to its
    database): the latest run per artifact and device unless ``every_run``."""
    source = _RecordRows(conn)
    return build_rows(select_results(source, device=device, model=model, every_run=every_run), source.artifacts())


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    return fmt.format(value)


def to_json(rows: list[dict[str, Any]]) -> str:
    from edgec.util import dumps_json

    return dumps_json({"report_version": REPORT_VERSION, "rows": rows}, what="the report", indent=2)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in COLUMNS) + " |",
             "|" + "|".join("---" if i < 5 else "---:" for i in range(len(COLUMNS))) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row, k, f).replace("|", "\\|") for k, _, f in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def to_table(rows: list[dict[str, Any]]):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="measured on device (latest run per artifact and device; baseline: fp32 of the same model)",
                  title_justify="left")
    columns = [c for c in COLUMNS if c[0] in TABLE_KEYS]
    for key, header, _ in columns:
        table.add_column(header, justify="left" if key in ("model", "device", "file", "precision") else "right")
    for row in rows:
        table.add_row(*[escape(_cell(row, k, f)) for k, _, f in columns])
    return table


def threads_notes(rows: list[dict[str, Any]]) -> list[str]:
    """A line for each speed-up whose fp32 baseline ran with another thread count."""
    return [f"{r['model']} {r['file']} on {r['device']}: the fp32 baseline ran with {r['baseline_threads'] or 'default'} "
            f"threads, this artifact with {r['threads'] or 'default'}; the speed-up is not like for like"
            for r in rows if r.get("baseline_result_id") is not None and r["baseline_result_id"] != r["result_id"]
            and r.get("baseline_threads") != r.get("threads")]


def plot(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Latency (and energy) against accuracy and size, one point per artifact and device, as a PNG
    (the dashboard shows the same figure: :func:`edgec.plots.report_figure`).

    Raises:
        EdgecError: matplotlib missing, not a .png name, or the file cannot be written.
    """
    from edgec import plots

    return plots.write_report_plot(rows, path)
