"""The results document as CI systems read it: JSON, JUnit XML, Markdown (a step summary).

JUnit: one ``<testsuite>`` per model x target row and one ``<testcase>`` per row x budget (plus
the build itself and the build's own checks): a broken budget is a ``<failure>`` with its message,
a build that failed an ``<error>``, a budget that could not be measured or has no baseline
``<skipped>`` with the reason. Markdown: one table row per model x target, regressions against the
baseline marked, the failures listed; it stays under :data:`MARKDOWN_LIMIT` bytes (what GitHub
accepts as a step summary), listing what it leaves out.
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from edgec.ci import gates

MARKDOWN_LIMIT = 1024 * 1024 - 16 * 1024  # GitHub's step summary limit is 1 MiB; keep a margin


def write(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def to_json(doc: dict[str, Any]) -> str:
    from edgec.util import dumps_json

    return dumps_json(doc, what="the CI report", indent=2, default=str) + "\n"


# ------------------------------------------------------------------------------------------------
# JUnit


def _classname(row: dict[str, Any]) -> str:
    return f"edgec.ci.{row['model']}.{row['target']}"


def to_junit(doc: dict[str, Any]) -> str:
    """JUnit XML: ``<testsuites>`` of one ``<testsuite>`` per row, a ``<testcase>`` per budget."""
    suites = ET.Element("testsuites", name="edgec ci")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    host = socket.gethostname() or "localhost"
    for row in doc["rows"]:
        durations = row.get("durations_s") or {}
        suite = ET.SubElement(suites, "testsuite", name=row["id"], timestamp=doc["created"][:19], hostname=host)
        props = ET.SubElement(suite, "properties")
        cache = row.get("cache") or {}
        for name, value in (("profile", row["profile"]), ("kind", row["kind"]), ("precision", row["precision"]),
                            ("out_dir", row["out_dir"]), ("cache", cache.get("state")), ("cache_key", cache.get("key"))):
            if value is not None:
                ET.SubElement(props, "property", name=name, value=str(value))
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        build = ET.SubElement(suite, "testcase", classname=_classname(row), name="build",
                              time=f"{float(durations.get('wall') or 0):.3f}")
        counts["tests"] += 1
        if row["status"] == "error":
            err = ET.SubElement(build, "error", message=_short(row["error"] or "the build failed"), type="BuildError")
            err.text = row["error"] or ""
            counts["errors"] += 1
        else:
            out = ET.SubElement(build, "system-out")
            out.text = f"{row['out_dir']}: {(row.get('figures') or {}).get('artifact')} ({cache.get('state')})"
        for verdict in row["budgets"]:
            case = ET.SubElement(suite, "testcase", classname=_classname(row), name=verdict["name"], time="0.000")
            counts["tests"] += 1
            if verdict["verdict"] == gates.FAILED:
                failure = ET.SubElement(case, "failure", message=_short(verdict["message"]),
                                        type="CheckFailed" if verdict.get("check") else "BudgetExceeded")
                failure.text = verdict["message"]
                counts["failures"] += 1
            elif verdict["verdict"] in (gates.NOT_MEASURED, gates.NO_BASELINE):
                ET.SubElement(case, "skipped", message=_short(f"{verdict['name']}: {verdict['message']}"))
                counts["skipped"] += 1
            else:
                out = ET.SubElement(case, "system-out")
                out.text = verdict["message"]
        suite.set("tests", str(counts["tests"]))
        suite.set("failures", str(counts["failures"]))
        suite.set("errors", str(counts["errors"]))
        suite.set("skipped", str(counts["skipped"]))
        suite.set("time", f"{float(durations.get('wall') or 0):.3f}")
        for k in totals:
            totals[k] += counts[k]
    for k, v in totals.items():
        suites.set(k, str(v))
    suites.set("time", f"{float(doc.get('duration_s') or 0):.3f}")
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _short(text: str, limit: int = 500) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


# ------------------------------------------------------------------------------------------------
# figures as text


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    from edgec.util import human_bytes as hb

    return hb(n)


def _verdict(row: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((v for v in row["budgets"] if v["name"] == name), None)


def cells(row: dict[str, Any], marks: bool = True) -> dict[str, str]:
    """The text of each column of a row (Markdown and console share it)."""
    f = row.get("figures") or {}
    base = row.get("baseline") or {}
    out: dict[str, str] = {}
    size = human_bytes(f.get("bytes"))
    if f.get("bytes") and base.get("bytes"):
        growth = (f["bytes"] / base["bytes"] - 1) * 100
        size += f" ({growth:+.1f} %)"
        v = _verdict(row, "max_bytes_growth_pct")
        if marks and v and v["verdict"] == gates.FAILED:
            size += " ▲ regression"
    out["size"] = size
    drop = "-" if f.get("accuracy_drop_points") is None else f"{f['accuracy_drop_points']:.2f}"
    if f.get("artifact_accuracy") is not None and base.get("artifact_accuracy") is not None:
        delta = (f["artifact_accuracy"] - base["artifact_accuracy"]) * 100
        drop += f" ({delta:+.2f} vs base)"
        v = _verdict(row, "max_accuracy_regression")
        if marks and v and v["verdict"] == gates.FAILED:
            drop += " ▼ regression"
    out["accuracy drop (pt)"] = drop
    out["compression"] = "-" if f.get("compression_rate") is None else f"{f['compression_rate']:.2f}x"
    share = f.get("edgetpu_op_share")
    out["Edge TPU ops"] = "-" if share is None else f"{f.get('edgetpu_ops_on_tpu')}/{f.get('edgetpu_ops')}"
    if f.get("latency_p90_ms") is not None:
        lat = f"{f['latency_p90_ms']:.3f}"
        if base.get("latency_p90_ms"):
            lat += f" ({(f['latency_p90_ms'] / base['latency_p90_ms'] - 1) * 100:+.1f} %)"
            v = _verdict(row, "max_latency_growth_pct")
            if marks and v and v["verdict"] == gates.FAILED:
                lat += " ▲ regression"
    else:
        lat = "not measured" if any(gates.BUDGETS.get(v["name"]) and gates.BUDGETS[v["name"]].latency
                                    for v in row["budgets"]) else "-"
    out["p90 ms"] = lat
    cache = row.get("cache") or {}
    out["cache"] = cache.get("state") or "-"
    wall = (row.get("durations_s") or {}).get("wall")
    out["time"] = "-" if wall is None else f"{wall:.1f} s"
    failed = [v["name"] for v in row["budgets"] if v["verdict"] == gates.FAILED]
    if row["status"] == "error":
        out["result"] = "💥 error" if marks else "error"
    elif failed:
        out["result"] = ("❌ " if marks else "FAILED ") + ", ".join(failed)
    else:
        out["result"] = "✅ passed" if marks else "passed"
    return out


COLUMNS = ("row", "precision", "artifact", "size", "accuracy drop (pt)", "compression", "Edge TPU ops", "p90 ms",
           "cache", "time", "result")


def _row_cells(row: dict[str, Any], marks: bool = True) -> list[str]:
    c = cells(row, marks)
    f = row.get("figures") or {}
    return [row["id"], row["precision"], f.get("artifact") or "-", *(c[k] for k in COLUMNS[3:])]


# ------------------------------------------------------------------------------------------------
# Markdown


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: dict[str, Any], limit: int = MARKDOWN_LIMIT) -> str:
    """A step summary: verdict, one table row per model x target (regressions marked), failures,
    and what was not measured; at most ``limit`` bytes (UTF-8), saying what it leaves out."""
    s = doc["summary"]
    ok = doc["verdict"] == "passed"
    head = [f"## edgec ci: {'✅ passed' if ok else '❌ failed'}", ""]
    facts = [f"{s['rows']} rows", f"{s['passed']} passed", f"{s['failed']} failed", f"{s['errors']} errors",
             f"{s['cached']} cached", f"{doc.get('duration_s', 0):.1f} s"]
    config = (doc.get("config") or {}).get("path")
    line = " · ".join(facts) + (f" · config `{config}`" if config else "")
    if doc.get("baseline"):
        line += f" · baseline `{doc['baseline'].get('path')}` ({doc['baseline'].get('created')})"
    if doc.get("measured_on"):
        line += f" · latency on `{doc['measured_on']}`"
    head += [line, ""]
    table = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    table += ["| " + " | ".join(_md(c) for c in _row_cells(row)) + " |" for row in doc["rows"]]
    problems = []
    for row in doc["rows"]:
        if row["status"] == "error":
            problems.append(f"- **{_md(row['id'])}** build error: {_md(row['error'])}")
        for v in row["budgets"]:
            if v["verdict"] == gates.FAILED:
                problems.append(f"- **{_md(row['id'])}** `{v['name']}`: {_md(v['message'])}")
    skipped = [f"- {_md(row['id'])} `{v['name']}`: {_md(v['message'])}" for row in doc["rows"]
               if row["status"] != "error" for v in row["budgets"] if v["verdict"] in (gates.NOT_MEASURED, gates.NO_BASELINE)]
    sections = [(head, None), (table, "table rows"), (["", "### Failures", ""] + problems if problems else [], "failures"),
                (["", "### Not measured or without a baseline", ""] + skipped if skipped else [], "notes")]
    out: list[str] = []
    used = 0
    left_out: list[str] = []
    note_room = 512
    for lines, what in sections:
        for i, text in enumerate(lines):
            size = len(text.encode()) + 1
            if used + size > limit - note_room:
                rest = len(lines) - i
                if what:
                    left_out.append(f"{rest} {what}")
                break
            out.append(text)
            used += size
    if left_out:
        out += ["", f"_Left out to stay under {limit // 1024} KiB: {', '.join(left_out)}; the JSON results have every "
                    "row._"]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------
# console


def print_console(doc: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from edgec.util import console

    out = console()
    table = Table(title="edgec ci", title_justify="left")
    for col in COLUMNS:
        table.add_column(col, justify="right" if col in ("size", "compression", "p90 ms", "time") else "left")
    for row in doc["rows"]:
        cells_ = _row_cells(row, marks=False)
        style = {"error": "red", "failed": "red"}.get(row["status"])
        table.add_row(*(escape(c) for c in cells_), style=style)
    out.print(table)
    skipped: dict[str, list[str]] = {}  # one line per reason
    for row in doc["rows"]:
        if row["status"] == "error":
            out.print(f"[red]ERROR[/] {escape(row['id'])}: {escape(row['error'] or '')}")
            continue
        for v in row["budgets"]:
            if v["verdict"] == gates.FAILED:
                out.print(f"[red]FAIL[/] {escape(row['id'])}: {escape(v['message'])}")
            elif v["verdict"] in (gates.NOT_MEASURED, gates.NO_BASELINE):
                skipped.setdefault(v["message"], []).append(f"{row['id']} {v['name']}")
    for message, where in skipped.items():
        listed = ", ".join(where[:4]) + (f" and {len(where) - 4} more" if len(where) > 4 else "")
        out.print(f"[yellow]SKIP[/] {escape(listed)}: {escape(message)}")
    s = doc["summary"]
    out.print(f"{s['rows']} rows: {s['passed']} passed, {s['failed']} failed, {s['errors']} errors; {s['cached']} cached; "
              f"{doc.get('duration_s', 0):.1f} s")
