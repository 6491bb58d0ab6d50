"""The Pareto front of a study: which trials no other trial beats on every objective, as a table,
a JSON document and a plot (accuracy against latency and against size, the front highlighted,
the fp32 and plain int8 baselines marked). Everything is read from the study's storage, so
``edgec search show`` works on any machine that reaches it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from edgec.search.objectives import feasible, front_trials
from edgec.search.study import BASELINES_ATTR, SETTINGS_ATTR, SURPLUS_ATTR


def summary(study, storage_shown: str | None = None) -> dict[str, Any]:
    """The study as one JSON-ready document: settings, counts, baselines, front and every trial."""
    settings = study.user_attrs.get(SETTINGS_ATTR) or {}
    objectives = settings.get("objectives") or []
    trials = study.get_trials(deepcopy=False)
    front = front_trials(trials, objectives)
    front_numbers = {t.number for t in front}
    states: dict[str, int] = {}
    stopped: dict[str, int] = {}
    for t in trials:
        state = "SURPLUS" if t.state.name == "FAIL" and t.user_attrs.get(SURPLUS_ATTR) else t.state.name
        states[state] = states.get(state, 0) + 1
        if t.state.name == "PRUNED":
            by = (t.user_attrs.get("stopped") or {}).get("by", "unknown")
            stopped[by] = stopped.get(by, 0) + 1
    finished = states.get("COMPLETE", 0) + states.get("PRUNED", 0)
    return {
        "study": study.study_name, "storage": storage_shown, "settings": settings, "objectives": objectives,
        "counts": {"finished": finished, **states}, "stopped_early": stopped,
        "stopped_early_share": round(sum(stopped.values()) / finished, 4) if finished else None,
        "baselines": study.user_attrs.get(BASELINES_ATTR) or [],
        "front": [trial_doc(t) for t in front],
        "trials": [trial_doc(t, t.number in front_numbers) for t in sorted(trials, key=lambda t: t.number)],
    }


def trial_doc(t, on_front: bool | None = None) -> dict[str, Any]:
    state = "SURPLUS" if t.state.name == "FAIL" and t.user_attrs.get(SURPLUS_ATTR) else t.state.name
    doc = {"number": t.number, "state": state, "label": t.user_attrs.get("label"), "params": t.params,
           "config": t.user_attrs.get("config"), "values": t.values, "feasible": feasible(t) if t.values else None,
           "constraints": dict(t.constraints or {}), "result": t.user_attrs.get("result"),
           "stopped": t.user_attrs.get("stopped"), "error": t.user_attrs.get("error"),
           "reused_from": t.user_attrs.get("reused_from"), "worker": t.user_attrs.get("worker"),
           "retry_of": t.system_attrs.get("failed_trial"), "timings": t.user_attrs.get("timings"),
           "rungs": t.user_attrs.get("rungs"), "key": t.user_attrs.get("key")}
    for name in ("hp", "training", "training_result", "probe"):
        if t.user_attrs.get(name) is not None:
            doc[name] = t.user_attrs[name]
    if on_front is not None:
        doc["on_front"] = on_front
    return doc


def _kib(n) -> str:
    return "-" if n is None else f"{n / 1024:.1f}"


def row(name: str, label: str, r: dict[str, Any]) -> list[str]:
    lat = r["latency"]
    lo, hi = lat["ci_ms"]
    energy = lat.get("energy_mj")
    return [name, label, f"{r['accuracy']:.2f}", f"{r['drop']:.2f}",
            f"{lat['p50_ms']:.4f} [{lo:.4f}-{hi:.4f}]", f"{lat['p90_ms']:.4f}",
            "-" if energy is None else f"{energy:.4f}", _kib(r["bytes"]), _kib(r["zstd_bytes"]),
            "-" if r.get("compression") is None else f"{r['compression']:.1f}x", f"{r['nonzero_params']:,}",
            ", ".join(lat.get("devices") or [])]


COLUMNS = ["trial", "configuration", "acc %", "drop pt", "p50 ms [95% CI]", "p90 ms", "energy mJ", "KiB",
           "zstd KiB", "rate", "params", "device"]


def table_rows(doc: dict[str, Any]) -> list[list[str]]:
    rows = [row(b["name"], b["label"], b) for b in doc["baselines"]]
    rows += [row(str(t["number"]), t["label"] or "", t["result"]) for t in doc["front"]]
    return rows


def print_summary(doc: dict[str, Any]) -> None:
    """The front (and the baselines) as a table, and what happened to the other trials."""
    from rich.markup import escape
    from rich.table import Table

    from edgec.util import console

    out = console()
    c = doc["counts"]
    settings = doc["settings"]
    objectives = ", ".join(doc["objectives"])
    out.print(escape(f"study '{doc['study']}' ({settings.get('target')}, measured on {settings.get('device', {}).get('where')}): "
                     f"{c['finished']} trials finished ({c.get('COMPLETE', 0)} complete, {c.get('PRUNED', 0)} stopped "
                     f"early: {', '.join(f'{n} by {k}' for k, n in sorted(doc['stopped_early'].items())) or 'none'}), "
                     f"{c.get('FAIL', 0)} failed, {c.get('RUNNING', 0)} running, {c.get('WAITING', 0)} queued; "
                     f"objectives {objectives}"))
    energy = settings.get("energy") or {}
    if not energy.get("available") and energy.get("reason"):
        reason = energy["reason"].split(": ")[0] if len(energy["reason"]) > 100 else energy["reason"]
        out.print(escape(f"energy: not an objective ({reason}; --json has the details)"))
    table = Table(title=f"Pareto front ({len(doc['front'])} of {c.get('COMPLETE', 0)} complete trials)"
                  + (" and the baselines" if doc["baselines"] else ""), title_justify="left")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("trial", "configuration", "device") else "right")
    for r in table_rows(doc):
        table.add_row(*map(escape, r))
    out.print(table)
    if not doc["baselines"] and settings.get("mode") == "builder":
        out.print("baselines: none (a --builder study has no single source model)")


def print_markdown(doc: dict[str, Any]) -> str:
    """The same table in Markdown (for notes and the README)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "| " + " | ".join("---" for _ in COLUMNS) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in table_rows(doc)]
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> Path:
    """Accuracy against latency and against zstd size: every complete trial, the front highlighted
    (and joined), infeasible trials crossed out, the baselines marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    complete = [t for t in doc["trials"] if t["state"] == "COMPLETE" and t["result"]]
    front = [t for t in complete if t.get("on_front")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = ((lambda r: r["latency"]["p50_ms"], "median latency (ms)"),
              (lambda r: r["zstd_bytes"] / 1024, "artifact size after zstd (KiB)"))
    for ax, (x_of, xlabel) in zip(axes, panels, strict=True):
        ok = [t for t in complete if t["feasible"] and not t.get("on_front")]
        bad = [t for t in complete if not t["feasible"]]
        if ok:
            ax.scatter([x_of(t["result"]) for t in ok], [t["result"]["accuracy"] for t in ok], s=18, c="0.6",
                       label="trials")
        if bad:
            ax.scatter([x_of(t["result"]) for t in bad], [t["result"]["accuracy"] for t in bad], s=18, c="0.75",
                       marker="x", label="breaks a constraint")
        if front:
            pts = sorted((x_of(t["result"]), t["result"]["accuracy"], t["number"]) for t in front)
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=36, c="tab:red", zorder=3, label="Pareto front")
            for x, y, n in pts:
                ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        for base, marker in zip(doc["baselines"], ("*", "D"), strict=False):
            ax.scatter([x_of(base)], [base["accuracy"]], s=110 if marker == "*" else 50, marker=marker,
                       c="tab:blue" if marker == "*" else "tab:green", zorder=4, label=base["name"])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        if xlabel.startswith("artifact") and complete:
            from matplotlib.ticker import FuncFormatter

            ax.set_xscale("log")
            plain = FuncFormatter(lambda v, _: f"{v:g}")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(plain)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(f"edgec search '{doc['study']}': {doc['settings'].get('target')}, "
                 f"{doc['counts']['finished']} trials", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def progress_line(doc_counts: dict[str, int], n_trials: int, trial, seconds: float, front: list,
                  objectives: list[str], eta_s: float | None) -> str:
    """One line per finished trial: where the search is, the trial, the best so far, the ETA."""
    state = trial.state.name
    what = trial.user_attrs.get("label") or ""
    if state == "COMPLETE":
        r = trial.user_attrs.get("result") or {}
        lat = r.get("latency") or {}
        note = (f"acc {r.get('accuracy', math.nan):.2f} % (drop {r.get('drop', math.nan):.2f}), "
                f"p50 {lat.get('p50_ms', math.nan):.4f} ms, {_kib(r.get('zstd_bytes'))} KiB zstd")
        if trial.user_attrs.get("reused_from") is not None:
            note += f" (result of trial {trial.user_attrs['reused_from']})"
    elif state == "PRUNED":
        note = "stopped: " + (trial.user_attrs.get("stopped") or {}).get("reason", "")
    elif trial.user_attrs.get(SURPLUS_ATTR):
        note = "not run: the study had its trials"
    else:
        note = "failed: " + str(trial.user_attrs.get("error") or "see the log")
    best = ""
    if front:
        results = [t.user_attrs["result"] for t in front]
        best = (f"; front {len(front)}: best acc {max(r['accuracy'] for r in results):.2f} %, "
                f"smallest {min(r['zstd_bytes'] for r in results) / 1024:.1f} KiB, "
                f"fastest {min(r['latency']['p50_ms'] for r in results):.4f} ms")
    eta = "" if eta_s is None else f"; ETA {_duration(eta_s)}"
    return (f"[{doc_counts['finished']}/{n_trials}] trial {trial.number} {state.lower()} in {seconds:.1f} s: "
            f"{what}: {note}{best}{eta}")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
