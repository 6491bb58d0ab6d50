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


def _pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten on both lower latency and higher accuracy, by latency."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def plot(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Latency (and energy) against accuracy and size, one point per artifact and device.

    Raises:
        EdgecError: matplotlib missing or the file cannot be written.
    """
    try:
        import matplotlib
    except ImportError as exc:
        raise EdgecError("--plot needs matplotlib, which is not installed; pip install 'matplotlib==3.11.2'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise EdgecError(f"--plot '{path}': expected a .png file name")
    energy = [r for r in rows if r["energy_mj"] is not None]
    panels = 3 if energy else 2
    fig, axes = plt.subplots(1, panels, figsize=(6.0 * panels, 5.0), constrained_layout=True)
    groups = sorted({(r["model"], r["device"]) for r in rows})
    colors = plt.get_cmap("tab10")
    markers = {"fp32": "o", "fp16": "s", "dynamic": "D", "int8": "^"}

    def label(r):
        return f"{r['precision']}  {r['file']}"

    fig.suptitle("measured on device: " + ", ".join(sorted({f"{r['device']} ({r['device_model']})" for r in rows})),
                 fontsize=10)

    for gi, (model, dev) in enumerate(groups):
        color = colors(gi % 10)
        members = [r for r in rows if (r["model"], r["device"]) == (model, dev)]
        acc = [r for r in members if r["accuracy_pct"] is not None]
        for r in members:
            xerr = [[r["latency_median_ms"] - r["latency_min_ms"]], [r["latency_p90_ms"] - r["latency_median_ms"]]]
            marker = markers.get(r["precision"], "o")
            if r["accuracy_pct"] is not None:
                axes[0].errorbar(r["latency_median_ms"], r["accuracy_pct"], xerr=xerr, fmt=marker, color=color,
                                 capsize=3, markersize=8)
                axes[0].annotate(label(r), (r["latency_median_ms"], r["accuracy_pct"]), textcoords="offset points",
                                 xytext=(6, 6), fontsize=8)
            axes[1].errorbar(r["size_kib"], r["latency_median_ms"], yerr=xerr, fmt=marker, color=color, capsize=3,
                             markersize=8)
            speed = f" ({r['speedup_vs_fp32']:.2f}x)" if r["speedup_vs_fp32"] is not None else ""
            axes[1].annotate(label(r) + speed, (r["size_kib"], r["latency_median_ms"]), textcoords="offset points",
                             xytext=(6, 6), fontsize=8)
            if panels == 3 and r["energy_mj"] is not None and r["accuracy_pct"] is not None:
                axes[2].plot(r["energy_mj"], r["accuracy_pct"], marker, color=color, markersize=8)
                axes[2].annotate(label(r), (r["energy_mj"], r["accuracy_pct"]), textcoords="offset points",
                                 xytext=(6, 6), fontsize=8)
        axes[1].plot([], [], "s", color=color, label=f"{model} on {dev}")  # legend: colour = model and device
        front = _pareto([(r["latency_median_ms"], r["accuracy_pct"]) for r in acc])
        if len(front) > 1:
            axes[0].plot([p[0] for p in front], [p[1] for p in front], "--", color=color, alpha=0.6, linewidth=1)
    axes[0].set_xlabel("median latency (ms); whiskers: min to p90")
    axes[0].set_ylabel("accuracy (%)")
    axes[0].set_title("accuracy vs latency (dashed: Pareto front)")
    axes[1].set_xlabel("artifact size (KiB)")
    axes[1].set_ylabel("median latency (ms)")
    axes[1].set_title("latency vs size (speed-up vs fp32 in brackets)")
    for precision, marker in markers.items():
        if any(r["precision"] == precision for r in rows):
            axes[1].plot([], [], marker, color="gray", label=precision)
    axes[1].legend(fontsize=8, loc="best")
    if panels == 3:
        axes[2].set_xlabel("energy per inference (mJ)")
        axes[2].set_ylabel("accuracy (%)")
        axes[2].set_title("accuracy vs energy")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.margins(0.25)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise EdgecError(f"cannot write plot '{path}': {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)
    return path
