"""Edge TPU analysis: decide op by op, from the .tflite itself, whether the Edge TPU runs it.

The compiler maps one contiguous Edge TPU subgraph, so the op where it ends is the first CPU op
and everything after it runs on the CPU; totals give the share of ops and MACs on the Edge TPU
and the parameters it must hold against its on-chip cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgec.targets.edgetpu.rules import (
    CHECKS,
    MAC_RULES,
    EdgeTPUSettings,
    Op,
    non_unit_dims,
    rules,
)


def _op_details(raw: bytes) -> list[tuple[int, Any]]:
    """(version, builtin options) of each operator of the main subgraph, in order."""
    from edgec.tflite_model import schema_module

    schema = schema_module()
    model = schema.ModelT.InitFromPackedBuf(raw, 0)
    codes = model.operatorCodes or []
    return [(int(codes[o.opcodeIndex].version or 1), o.builtinOptions) for o in (model.subgraphs[0].operators or [])]


def _own_problems(op: Op, entry: dict | None, table: dict) -> list[tuple[str, str]]:
    """Reasons this op cannot run on the Edge TPU by itself (empty when it can)."""
    if entry is None:
        what = f"custom op '{op.name.split(':', 1)[1]}'" if op.name.startswith("CUSTOM:") else f"op {op.name}"
        return [("unsupported_op", f"{what} is not in the Edge TPU's supported operations")]
    problems: list[tuple[str, str]] = []
    runtime = op.settings.min_runtime_version
    since = entry.get("min_runtime")
    if since and runtime < since:
        problems.append(("runtime_version", f"{entry['coral']} needs Edge TPU runtime {since}+ "
                                            f"(min_runtime_version is {runtime})"))
    tensors = [t for t in [*op.inputs, *op.outputs] if t is not None]
    bad = [t for t in tensors if (t.dtype not in table["constant_dtypes"] if t.is_constant
                                  else t.dtype not in table["tensor_dtypes"] or not t.scale)]
    if bad:
        t = bad[0]
        kind = f"{t.dtype} without quantization" if t.dtype in table["tensor_dtypes"] else t.dtype
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        problems.append(("dtype", f"{'constant' if t.is_constant else 'tensor'} '{t.name}' is {kind}{more}; "
                                  "the Edge TPU runs 8-bit quantized tensors and parameters only"))
    for t in tensors:
        if any(d < 0 for d in t.shape_signature):
            problems.append(("dynamic_shape", f"tensor '{t.name}' has a dynamic shape {list(t.shape_signature)}; "
                                              "tensor sizes must be constant at compile time"))
            break
    keep = table["max_innermost_dims"]
    for t in tensors:
        if not t.is_constant and len(t.shape) > keep and non_unit_dims(t.shape[:-keep]) > 0:
            problems.append(("rank", f"tensor '{t.name}' {list(t.shape)} has a dimension > 1 outside the "
                                     f"{keep} innermost"))
            break
    for i in entry.get("parameters", []):
        if i < len(op.inputs) and op.inputs[i] is not None and not op.inputs[i].is_constant:
            problems.append(("non_constant_parameters", f"input {i} ('{op.inputs[i].name}') is a model parameter "
                                                        "that is not constant at compile time"))
    if problems and any(c == "dtype" for c, _ in problems):
        return problems  # op-specific limits are moot on float/unquantized tensors
    for limit in entry.get("limits", []):
        if limit.get("min_runtime") and runtime < limit["min_runtime"]:
            continue
        if limit.get("max_runtime") and runtime > limit["max_runtime"]:
            continue
        for check in limit.get("checks", []):
            try:
                found = CHECKS[check](op)
            except (IndexError, AttributeError, TypeError, ValueError) as exc:  # odd operand layout
                found = ("other", f"cannot evaluate '{check}' on this op ({exc})")
            if found:
                problems.append(found)
    return problems


def analyze(source: str | Path | bytes, settings: EdgeTPUSettings | None = None) -> dict[str, Any]:
    """Decide op by op whether the Edge TPU runs a .tflite model, and why not.

    Args:
        source: path of a .tflite file or its bytes.
        settings: the profile's Edge TPU settings (min runtime version, cache size, TPUs);
            Coral's defaults when omitted.

    Returns:
        A JSON-ready report: ``ops`` (index, op, version, on_tpu, category, reason, MACs,
        parameter bytes), ``first_cpu_op``, ``totals`` (op and MAC shares, parameter bytes vs
        the on-chip cache), ``float_tensors`` and ``warnings``.

    Raises:
        EdgecError: unreadable or not a TFLite model.
    """
    from edgec import tflite_model

    settings = settings or EdgeTPUSettings.from_profile(None)
    table = rules()
    raw = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    model = tflite_model.load(source if isinstance(source, (str, Path)) else raw)
    details = _op_details(raw)
    rows: list[dict[str, Any]] = []
    seen_params: set[int] = set()
    for op, (version, options) in zip(model.operators, details, strict=True):
        inputs = [model.tensors[i] if i >= 0 else None for i in op.inputs]
        outputs = [model.tensors[i] for i in op.outputs]
        view = Op(op.index, op.op, version, options, inputs, outputs, settings)
        entry = table["ops"].get(op.op)
        problems = _own_problems(view, entry, table)
        macs = 0
        if entry and entry.get("macs"):
            try:
                macs = int(MAC_RULES[entry["macs"]](view))
            except (IndexError, AttributeError, TypeError):  # unexpected operand layout: no estimate
                macs = 0
        params = [t for t in inputs if t is not None and t.is_parameter and t.index not in seen_params]
        seen_params.update(t.index for t in params)
        out = outputs[0] if outputs else None
        rows.append({
            "index": op.index, "op": op.op, "version": version, "coral_op": entry.get("coral") if entry else None,
            "own_problems": [{"category": c, "reason": r} for c, r in problems],
            "macs": macs, "param_bytes": int(sum(t.nbytes for t in params)),
            "output": {"dtype": out.dtype, "shape": list(out.shape_signature or out.shape)} if out else None,
            "note": entry.get("notes") if entry else None,
        })
    start = next((r["index"] for r in rows if not r["own_problems"]), None)
    first_cpu = None
    if start is None:
        first_cpu = rows[0]["index"] if rows else None
    else:
        first_cpu = next((r["index"] for r in rows[start:] if r["own_problems"]), None)
    for r in rows:
        i = r["index"]
        if r["own_problems"]:
            r["on_tpu"] = False
            r["category"] = r["own_problems"][0]["category"]
            r["reason"] = "; ".join(p["reason"] for p in r["own_problems"])
            if start is not None and i < start:
                r["reason"] += " (before the Edge TPU subgraph; runs on the CPU)"
        elif first_cpu is not None and i > first_cpu:
            r.update(on_tpu=False, category="after_cpu_op",
                     reason=f"after the first CPU op #{first_cpu} {rows[first_cpu]['op']}: the compiler maps one "
                            "contiguous Edge TPU subgraph, so everything after that op runs on the CPU")
        else:
            r.update(on_tpu=True, category="mapped", reason="maps to the Edge TPU")
    for r in rows:  # a CPU op that would map by itself keeps that fact for the reader
        if r["category"] == "after_cpu_op":
            r["reason"] += " (supported by itself)" if not r["own_problems"] else \
                f" (also: {'; '.join(p['reason'] for p in r['own_problems'])})"
    total_macs = sum(r["macs"] for r in rows)
    tpu_rows = [r for r in rows if r["on_tpu"]]
    tpu_macs = sum(r["macs"] for r in tpu_rows)
    param_bytes = sum(r["param_bytes"] for r in rows)
    tpu_param_bytes = sum(r["param_bytes"] for r in tpu_rows)
    cache = settings.cache_bytes
    floats = [t.name for t in model.tensors if t.dtype.startswith(("float", "bfloat"))]
    warnings: list[str] = []
    if first_cpu is not None:
        fc = rows[first_cpu]
        where = ("no op maps to the Edge TPU, starting" if start is None else
                 f"{len(rows) - len(tpu_rows)} of {len(rows)} ops run on the CPU; the Edge TPU subgraph ends")
        warnings.append(f"{where} at op #{first_cpu} {fc['op']}: {fc['reason']}")
    if tpu_param_bytes > cache:
        warnings.append(
            f"parameters mapped to the Edge TPU (about {tpu_param_bytes / 2**20:.2f} MiB) exceed the on-chip cache "
            f"({cache / 2**20:.2f} MiB over {settings.num_segments} Edge TPU(s)): about "
            f"{(tpu_param_bytes - cache) / 2**20:.2f} MiB will stream from off-chip memory on every inference, "
            "which is slower; use a smaller model or segment it over more Edge TPUs")
    if model.num_subgraphs > 1:
        warnings.append(f"the model has {model.num_subgraphs} subgraphs; the Edge TPU compiler maps only the first")
    if floats:
        warnings.append(f"{len(floats)} float tensors (first: '{floats[0]}'); the Edge TPU needs full-integer models")
    for r in rows:
        r.pop("own_problems")
    return {
        "file": str(source) if isinstance(source, (str, Path)) else None,
        "rules": {"sources": table["sources"], "min_runtime_version": settings.min_runtime_version,
                  "cache_mb": settings.cache_mb, "num_tpus": settings.num_tpus},
        "ops": rows,
        "first_cpu_op": None if first_cpu is None else {k: rows[first_cpu][k] for k in ("index", "op", "category", "reason")},
        "tpu_subgraph": None if start is None else {"start": start, "end": len(rows) - 1 if first_cpu is None else first_cpu - 1},
        "float_tensors": floats,
        "totals": {
            "ops": len(rows),
            "ops_on_tpu": len(tpu_rows),
            "op_share": round(len(tpu_rows) / len(rows), 6) if rows else None,
            "macs": total_macs,
            "macs_on_tpu": tpu_macs,
            "mac_share": round(tpu_macs / total_macs, 6) if total_macs else None,
            "param_bytes": param_bytes,
            "param_bytes_on_tpu": tpu_param_bytes,
            "cache_bytes": cache,
            "cache_share": round(tpu_param_bytes / cache, 6) if cache else None,
            "off_chip_bytes_estimate": max(0, tpu_param_bytes - cache),
            "file_bytes": model.size,
        },
        "warnings": warnings,
    }


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few human lines about an analysis (and the compiler, when it ran)."""
    t = report["totals"]
    share = f"{t['mac_share'] * 100:.1f} %" if t["mac_share"] is not None else "n/a (no MAC ops)"
    lines = [
        f"Edge TPU: {t['ops_on_tpu']}/{t['ops']} ops mapped ({(t['op_share'] or 0) * 100:.1f} %), "
        f"{share} of {t['macs']:,} MACs; parameters {t['param_bytes_on_tpu'] / 2**20:.2f} MiB on-chip of "
        f"{t['cache_bytes'] / 2**20:.0f} MiB cache (estimate)"
    ]
    fc = report.get("first_cpu_op")
    if fc is not None:
        lines.append(f"first CPU op: #{fc['index']} {fc['op']}: {fc['reason']}")
    compiler = report.get("compiler")
    if compiler:
        if compiler["status"] == "compiled":
            c = compiler.get("totals") or {}
            lines.append(f"edgetpu_compiler {compiler.get('version') or ''}: compiled, {c.get('ops_on_tpu')}/"
                         f"{c.get('ops')} ops on the Edge TPU; {len(compiler.get('disagreements') or [])} "
                         "disagreements with the analysis")
        else:
            lines.append(f"{compiler['status'].replace('_', ' ')}: {compiler['reason']}")
            if compiler.get("command"):
                lines.append(f"compile with: {compiler['command']}")
    return lines

