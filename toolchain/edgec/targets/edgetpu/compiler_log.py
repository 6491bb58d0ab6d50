"""edgetpu_compiler output: the console text and ``*_edgetpu.log`` files, parsed into one structure.

The per-op ``Operator / Count / Status`` table maps onto the analysis' categories, so compiler
and analysis can be compared op type by op type.
"""

from __future__ import annotations

import re
from typing import Any

#: edgetpu_compiler status text -> category (the compiler's wording, see tests/targets/edgetpu/fixtures)
COMPILER_STATUS = {
    "Mapped to Edge TPU": "mapped",
    "Operation not supported": "unsupported_op",
    "Operation is working on an unsupported data type": "dtype",
    "Operation version not supported": "op_version",
    "More than one subgraph is not supported": "after_cpu_op",
    "Tensor has unsupported rank (up to 3 innermost dimensions mapped)": "rank",
    "Operation is otherwise supported, but not mapped due to some unspecified limitation": "unspecified",
    "Only Strided-Slice with unitary strides supported": "op_constraint",
}

# --------------------------------------------------------------------------------------------
# compiler log parsing

_SIZE_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9}
_ROW = re.compile(r"^\s*([A-Z][A-Z0-9_]*(?::\S+)?)\s+(\d+)\s+(\S.*?)\s*$")
_FIELDS = {
    "Input model": ("input_model", str), "Input": ("input_model", str),
    "Output model": ("output_model", str), "Output": ("output_model", str),
    "Input size": ("input_bytes", "size"), "Output size": ("output_bytes", "size"),
    "On-chip memory used for caching model parameters": ("on_chip_bytes", "size"),
    "On-chip memory remaining for caching model parameters": ("on_chip_remaining_bytes", "size"),
    "On-chip memory available for caching model parameters": ("on_chip_available_bytes", "size"),
    "Off-chip memory used for streaming uncached model parameters": ("off_chip_bytes", "size"),
    "Number of Edge TPU subgraphs": ("tpu_subgraphs", int),
    "Total number of operations": ("ops", int),
    "Operation log": ("operation_log", str),
    "Number of operations that will run on Edge TPU": ("ops_on_tpu", int),
    "Number of operations that will run on CPU": ("ops_on_cpu", int),
}


def _size(text: str) -> int | None:
    m = re.match(r"^\s*([\d.]+)\s*([KMG]i?B|B)\s*$", text)
    return int(round(float(m.group(1)) * _SIZE_UNITS[m.group(2)])) if m else None


def status_category(status: str) -> str:
    """The analysis category of an edgetpu_compiler status line."""
    return COMPILER_STATUS.get(status.strip(), "other")


def parse_compiler_output(text: str) -> dict[str, Any]:
    """Parse what edgetpu_compiler prints (and the ``*_edgetpu.log`` files it writes).

    Handles the console output (``-s`` adds the per-op table), segmented compiles (one block
    per segment) and the operation log files (``Input:``/``Output:`` then the table).

    Returns:
        ``version``, ``succeeded`` (True/False, None when the text does not say), ``errors``
        (the compiler's error lines) and ``models``: one entry per compiled model or segment
        with its summary fields (sizes in bytes) and ``operators`` rows
        (op, count, status, on_tpu, category).
    """
    version = None
    succeeded: bool | None = None
    errors: list[str] = []
    models: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    in_table = False
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        m = re.match(r"^Edge TPU Compiler version (\S+)", s)
        if m:
            version = version or m.group(1)
            continue
        if s.startswith(("Compilation succeeded", "Models compiled successfully", "Model compiled successfully")):
            if s.startswith("Compilation succeeded"):
                succeeded = True
            m = re.search(r"in (\d+) ms", s)
            if m:  # each compiled model or segment starts with this line, then its summary fields
                current = {"compile_ms": int(m.group(1)), "operators": []}
                models.append(current)
            in_table = False
            continue
        if s.startswith(("Compilation failed", "ERROR:", "Invalid model", "Model not quantized",
                         "Model could not be parsed")):
            if not s.startswith("ERROR:"):  # ERROR lines may be followed by a successful retry
                succeeded = False
            if s not in ("Compilation failed!",):
                errors.append(s)
            in_table = False
            continue
        if re.match(r"^Operator\s+Count\s+Status$", s):
            in_table = True
            if current is None:
                current = {"operators": []}
                models.append(current)
            continue
        key, sep, value = s.partition(":")
        if sep and key in _FIELDS:
            name, kind = _FIELDS[key]
            if name == "input_model" and current is not None and current.get("input_model"):
                current = {"operators": []}  # a second model/segment in the same output
                models.append(current)
            if current is None:
                current = {"operators": []}
                models.append(current)
            value = value.strip()
            current[name] = _size(value) if kind == "size" else (int(value) if kind is int else value)
            in_table = False
            continue
        if in_table:
            m = _ROW.match(line)
            if m:
                status = m.group(3)
                category = status_category(status)
                current["operators"].append({"op": m.group(1), "count": int(m.group(2)), "status": status,
                                             "on_tpu": category == "mapped", "category": category})
                continue
            in_table = False
    for model in models:
        ops = model.get("operators") or []
        if ops and "ops_on_tpu" not in model:
            model["ops_on_tpu"] = sum(o["count"] for o in ops if o["on_tpu"])
            model["ops_on_cpu"] = sum(o["count"] for o in ops if not o["on_tpu"])
    models = [m for m in models if len(m) > 1 or m.get("operators")]
    return {"version": version, "succeeded": succeeded, "errors": errors, "models": models}


def compiler_totals(parsed: dict[str, Any]) -> dict[str, Any]:
    """Totals over all compiled models/segments of a parsed compiler output (None when unknown)."""
    models = parsed["models"]

    def total(key):
        values = [m.get(key) for m in models]
        return sum(values) if values and all(v is not None for v in values) else None

    return {k: total(k) for k in ("ops", "ops_on_tpu", "ops_on_cpu", "on_chip_bytes", "off_chip_bytes",
                                  "tpu_subgraphs")}


def compare_with_analysis(report: dict[str, Any], parsed: dict[str, Any]) -> list[dict[str, Any]]:
    """Where the compiler's per-op table and the analysis disagree (per op type counts).

    Returns:
        One entry per op type whose Edge TPU / CPU counts differ, with both sides' reasons,
        plus an entry for the total op count when it differs. Empty when they agree or the
        compiler printed no per-op table.
    """
    rows = [o for m in parsed["models"] for o in m.get("operators", [])]
    if not rows:
        return []
    ours: dict[str, dict[str, Any]] = {}
    for r in report["ops"]:
        name = r["op"].split(":")[0]  # the compiler prints custom ops as CUSTOM
        side = ours.setdefault(name, {"on_tpu": 0, "on_cpu": 0, "reasons": []})
        side["on_tpu" if r["on_tpu"] else "on_cpu"] += 1
        if not r["on_tpu"] and r["category"] not in side["reasons"]:
            side["reasons"].append(r["category"])
    theirs: dict[str, dict[str, Any]] = {}
    for o in rows:
        side = theirs.setdefault(o["op"], {"on_tpu": 0, "on_cpu": 0, "statuses": []})
        side["on_tpu" if o["on_tpu"] else "on_cpu"] += o["count"]
        if not o["on_tpu"] and o["status"] not in side["statuses"]:
            side["statuses"].append(o["status"])
    out = []
    for name in sorted(set(ours) | set(theirs)):
        a = ours.get(name, {"on_tpu": 0, "on_cpu": 0, "reasons": []})
        c = theirs.get(name, {"on_tpu": 0, "on_cpu": 0, "statuses": []})
        if (a["on_tpu"], a["on_cpu"]) != (c["on_tpu"], c["on_cpu"]):
            out.append({"op": name, "analysis": a, "compiler": c})
    n_ours, n_theirs = len(report["ops"]), sum(o["count"] for o in rows)
    if n_ours != n_theirs:
        out.append({"op": "(total)", "analysis": {"ops": n_ours}, "compiler": {"ops": n_theirs}})
    return out

