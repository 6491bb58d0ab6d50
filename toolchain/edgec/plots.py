"""The charts of measured results, drawn in one place for ``edgec report --plot`` (PNG) and the
collector's dashboard (SVG): the same figure whatever the format.

Figures are built with :class:`matplotlib.figure.Figure` (no pyplot state), under one lock and
with math text off: device names, labels and file names come from agents and are drawn as they
are, never parsed.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError

#: marker of each precision; a precision outside the vocabulary gets its own (never fp32's)
MARKERS = {"fp32": "o", "fp16": "s", "dynamic": "D", "int8": "^"}
OTHER_MARKER = "P"
MAX_ACCURACY = 100.0
_LOCK = threading.Lock()  # rcParams are global: one figure is drawn at a time


def _matplotlib():
    try:
        import matplotlib
    except ImportError as exc:
        raise EdgecError("plots need matplotlib, which is not installed; pip install 'matplotlib==3.11.2'") from exc
    return matplotlib


@contextlib.contextmanager
def drawing() -> Iterator[None]:
    """The lock and settings every figure is drawn and saved under."""
    matplotlib = _matplotlib()
    with _LOCK, matplotlib.rc_context({"text.parse_math": False, "svg.fonttype": "path",
                                       "svg.hashsalt": "edgec", "figure.max_open_warning": 0}):
        yield


def marker(precision: str | None) -> str:
    return MARKERS.get(precision or "", OTHER_MARKER)


def point_labels(rows: list[dict[str, Any]]) -> list[str]:
    """One label per row, distinct for distinct artifacts: the precision, the artifact file, and
    where two artifacts share both, the folder of their build, then the start of their sha256."""
    def base(r):
        return f"{r.get('precision') or '?'} {r.get('file') or '?'}"

    def with_dir(r):
        build = Path(str(r.get("build_dir") or "")).name
        return base(r) + (f" ({build})" if build else "")

    labels = [base(r) for r in rows]
    for step in (with_dir, lambda r: with_dir(r) + f" {(r.get('artifact_sha256') or '')[:8]}"):
        clash = {lab for lab in labels if labels.count(lab) > 1}
        labels = [step(r) if lab in clash else lab for r, lab in zip(rows, labels, strict=True)]
    return labels


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten on both lower latency and higher accuracy, by latency."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def report_figure(rows: list[dict[str, Any]]):
    """Accuracy against latency (Pareto front dashed), latency against size, and accuracy against
    energy where energy was measured; one colour per model and device, one marker per precision.
    Call it inside :func:`drawing`."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    energy = [r for r in rows if r.get("energy_mj") is not None and r.get("accuracy_pct") is not None]
    panels = 3 if energy else 2
    fig = Figure(figsize=(6.0 * panels, 5.0), layout="constrained")
    axes = fig.subplots(1, panels)
    groups = sorted({(r["model"], r["device"]) for r in rows})
    colors = [f"C{i % 10}" for i in range(len(groups))]
    labels = dict(zip(map(id, rows), point_labels(rows), strict=True))
    fig.suptitle("measured on device: " + ", ".join(sorted({f"{r['device']} ({r.get('device_model') or '?'})"
                                                            for r in rows})), fontsize=10)
    fronts = 0
    for color, (model, dev) in zip(colors, groups, strict=True):
        members = [r for r in rows if (r["model"], r["device"]) == (model, dev)]
        for r in members:
            med = r["latency_median_ms"]
            lo, hi = r.get("latency_min_ms"), r.get("latency_p90_ms")
            err = [[med - lo if lo is not None else 0.0], [hi - med if hi is not None else 0.0]]
            mk = marker(r.get("precision"))
            if r.get("accuracy_pct") is not None:
                axes[0].errorbar(med, r["accuracy_pct"], xerr=err, fmt=mk, color=color, capsize=3, markersize=8,
                                 gid="point")
                axes[0].annotate(labels[id(r)], (med, r["accuracy_pct"]), textcoords="offset points",
                                 xytext=(6, 6), fontsize=8)
            if r.get("size_kib") is not None:
                axes[1].errorbar(r["size_kib"], med, yerr=err, fmt=mk, color=color, capsize=3, markersize=8,
                                 gid="point")
                speed = f" ({r['speedup_vs_fp32']:.2f}x)" if r.get("speedup_vs_fp32") is not None else ""
                axes[1].annotate(labels[id(r)] + speed, (r["size_kib"], med), textcoords="offset points",
                                 xytext=(6, 6), fontsize=8)
            if panels == 3 and r.get("energy_mj") is not None and r.get("accuracy_pct") is not None:
                axes[2].plot([r["energy_mj"]], [r["accuracy_pct"]], mk, color=color, markersize=8, gid="point")
                axes[2].annotate(labels[id(r)], (r["energy_mj"], r["accuracy_pct"]), textcoords="offset points",
                                 xytext=(6, 6), fontsize=8)
        front = pareto([(r["latency_median_ms"], r["accuracy_pct"]) for r in members
                        if r.get("accuracy_pct") is not None])
        if front:  # one point is a front too: drawn as a dashed ring
            fronts += 1
            axes[0].plot([p[0] for p in front], [p[1] for p in front], "--", marker="o", markersize=15,
                         markerfacecolor="none", color=color, alpha=0.6, linewidth=1, gid="pareto")
    # the legends show exactly what was drawn: a colour per model and device (a line, no marker),
    # a marker per precision present, the front where there is one
    drawn = sorted({r.get("precision") or "?" for r in rows}, key=lambda p: (p not in MARKERS, p))
    handles = [Line2D([], [], color=c, linewidth=3, label=f"{m} on {d}") for c, (m, d) in zip(colors, groups,
                                                                                             strict=True)]
    handles += [Line2D([], [], color="gray", marker=marker(p), linestyle="none", label=p) for p in drawn]
    axes[1].legend(handles=handles, fontsize=8, loc="best")
    if fronts:
        axes[0].legend(handles=[Line2D([], [], color="gray", linestyle="--", marker="o", markersize=10,
                                       markerfacecolor="none", label="Pareto front")], fontsize=8, loc="lower right")
    axes[0].set_xlabel("median latency (ms); whiskers: min to p90")
    axes[0].set_ylabel("accuracy (%)")
    axes[0].set_title("accuracy vs latency" + (" (dashed: Pareto front)" if fronts else ""))
    if not any(r.get("accuracy_pct") is not None for r in rows):
        axes[0].text(0.5, 0.5, "no accuracy recorded", transform=axes[0].transAxes, ha="center", color="gray")
    axes[1].set_xlabel("artifact size (KiB)")
    axes[1].set_ylabel("median latency (ms)")
    axes[1].set_title("latency vs size (speed-up vs fp32 in brackets)")
    if panels == 3:
        axes[2].set_xlabel("energy per inference (mJ)")
        axes[2].set_ylabel("accuracy (%)")
        axes[2].set_title("accuracy vs energy")
    for i, ax in enumerate(axes):
        ax.grid(True, alpha=0.3)
        ax.margins(0.25)
        if i != 1:
            _accuracy_axis(ax)
    return fig


def _accuracy_axis(ax) -> None:
    """An accuracy axis ends at 100 %: the margins must not invent room above it."""
    ax.autoscale_view()
    bottom, top = ax.get_ylim()
    if top > MAX_ACCURACY:
        ax.set_ylim(min(bottom, MAX_ACCURACY - 1.0), MAX_ACCURACY)
        for artist in [*ax.lines, *ax.collections]:  # a point at 100 % is drawn whole, not cut by the frame
            artist.set_clip_on(False)


def history_figure(rows: list[dict[str, Any]]):
    """Median latency over time, one line per artifact and device (every run), p90 as a band."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    ax = fig.subplots()
    series: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        series.setdefault((r["model"], r["device"], r.get("artifact_sha256"), r.get("runtime")), []).append(r)
    keys = sorted(series, key=lambda k: tuple(str(v) for v in k))
    firsts = [min(series[k], key=lambda r: _when(r["created"])) for k in keys]
    for i, (key, label) in enumerate(zip(keys, point_labels(firsts), strict=True)):
        runs = sorted(series[key], key=lambda r: _when(r["created"]))
        times = [_when(r["created"]) for r in runs]
        med = [r["latency_median_ms"] for r in runs]
        color = f"C{i % 10}"
        ax.plot(times, med, "-", marker=marker(runs[0].get("precision")), color=color, gid="history",
                label=f"{label} on {key[1]}")
        p90 = [r.get("latency_p90_ms") if r.get("latency_p90_ms") is not None else m for r, m in zip(runs, med,
                                                                                                  strict=True)]
        if len(runs) > 1:
            ax.fill_between(times, med, p90, color=color, alpha=0.15, linewidth=0)
    ax.set_ylabel("median latency (ms); band: to p90")
    ax.set_title("latency over time (every run)")
    ax.grid(True, alpha=0.3)
    if keys:
        import datetime

        import matplotlib.dates as mdates

        when = [_when(r["created"]) for r in rows]
        pad = max((max(when) - min(when)) * 0.05, datetime.timedelta(minutes=1))
        ax.set_xlim(min(when) - pad, max(when) + pad)  # one run is a point in time, not a year
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no results yet", transform=ax.transAxes, ha="center", color="gray")
    return fig


def _when(created):
    """A result's time (the store's ISO 8601 text, or seconds since the epoch) as a datetime."""
    import datetime

    if isinstance(created, int | float):
        return datetime.datetime.fromtimestamp(created, datetime.UTC)
    return datetime.datetime.fromisoformat(str(created))


def render(fig, fmt: str, dpi: int = 110) -> bytes:
    """The figure as PNG or SVG bytes (call inside :func:`drawing`)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue()


def report_chart(rows: list[dict[str, Any]], fmt: str = "svg") -> bytes:
    """:func:`report_figure` as bytes (what the dashboard shows)."""
    with drawing():
        return render(report_figure(rows), fmt)


def history_chart(rows: list[dict[str, Any]], fmt: str = "svg") -> bytes:
    with drawing():
        return render(history_figure(rows), fmt)


def write_report_plot(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """``edgec report --plot FILE.png``: :func:`report_figure` as a PNG.

    Raises:
        EdgecError: matplotlib missing, not a .png name, or the file cannot be written.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise EdgecError(f"--plot '{path}': expected a .png file name")
    data = report_chart(rows, "png")
    temp = path.with_name(f".{path.name}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp.write_bytes(data)
        temp.replace(path)  # never a half-written PNG under the name asked for
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise EdgecError(f"cannot write plot '{path}': {exc.strerror or exc}") from exc
    return path
