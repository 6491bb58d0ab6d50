"""Budgets: what a row's figures must meet, on their own and against a baseline run.

A row's figures come from its build's manifest (size, accuracy, Edge TPU op share), the float
``.tflite`` of its source model (compression) and, when measured, the device (latency). Each
budget gives a verdict: ``passed``, ``failed``, ``not_measured`` (the figure could not be taken,
with the reason: never a made-up number) or ``no_baseline`` (a regression budget without a
baseline row to compare with). Only ``failed`` fails a run.
"""

from __future__ import annotations

from typing import Any

from edgec import targets
from edgec.budgets import CI, Budget, check_value, used_by

PASSED, FAILED, NOT_MEASURED, NO_BASELINE = "passed", "failed", "not_measured", "no_baseline"


#: the budgets of ``[budgets]``: the common ones (:mod:`edgec.budgets` defines them, with build's and
#: search's), then each registered target kind's own (:attr:`edgec.targets.base.Target.budgets`)
BUDGETS: dict[str, Budget] = {**used_by(CI), **{b.name: b for kind in targets.REGISTRY
                                                for b in targets.target_class(kind).budgets}}


def check_budget_value(name: str, value: float) -> str | None:
    """Why ``value`` cannot be the limit of the CI budget ``name``, or None."""
    return check_value(BUDGETS[name], value)


# ------------------------------------------------------------------------------------------------
# figures


def figures(manifest: dict[str, Any], float_tflite_bytes: int | None) -> dict[str, Any]:
    """The figures of a build that budgets read, from its manifest (``artifacts[0]`` is the
    artifact the device runs) and the bytes of the source model's float .tflite."""
    primary = manifest["artifacts"][0]
    v = manifest.get("verification") or {}
    out: dict[str, Any] = {
        "artifact": primary["file"], "format": primary.get("format"), "bytes": primary["bytes"],
        "sha256": primary["sha256"], "precision": manifest.get("precision"),
        "float_accuracy": v.get("float_accuracy"), "artifact_accuracy": v.get("artifact_accuracy"),
        "accuracy_drop_points": v.get("accuracy_drop_points"), "agreement": v.get("agreement"),
        "float_tflite_bytes": float_tflite_bytes,
        "compression_rate": round(float_tflite_bytes / primary["bytes"], 3) if float_tflite_bytes else None,
    }
    if manifest.get("target") in targets.REGISTRY:  # the figures of the kind's own budgets
        out.update(targets.get(manifest["target"]).figures(manifest))
    return out


def latency_figures(report: dict[str, Any], device: str) -> dict[str, Any]:
    """The latency figures of an agent report."""
    lat = report["latency_ms"]
    return {"latency_p90_ms": lat["p90"], "latency_median_ms": lat["median"], "latency_std_ms": lat["std"],
            "latency_runs": lat["count"], "latency_device": f"{device} ({report['device']['model']})",
            "latency_runtime": report["runtime"]["name"]}


# ------------------------------------------------------------------------------------------------
# verdicts


def _num(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def evaluate(budgets: dict[str, float], figs: dict[str, Any], baseline: dict[str, Any] | None,
             unmeasured: dict[str, str] | None = None, no_baseline: str = "no --baseline given",
             failed: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The verdict of each budget of a row.

    Args:
        budgets: budget name -> limit, for this row.
        figs: the row's figures (:func:`figures`, plus :func:`latency_figures` when measured).
        baseline: the baseline run's figures of the same row, if any.
        unmeasured: figure -> why it was not measured (latency without a device, a failed
            measurement).
        no_baseline: why ``baseline`` is None (no --baseline, no such row in it).
        failed: figure -> why measuring it failed where it was asked for (a device that did not
            answer): the budget fails, it is not skipped.
    """
    unmeasured, failed = unmeasured or {}, failed or {}
    out = []
    for name in sorted(budgets, key=list(BUDGETS).index):
        spec, limit = BUDGETS[name], budgets[name]
        value = figs.get(spec.figure)
        entry: dict[str, Any] = {"name": name, "limit": limit, "value": None, "verdict": NOT_MEASURED}
        if value is None and spec.figure in failed:
            entry.update(verdict=FAILED, message=f"could not be measured: {failed[spec.figure]}")
            out.append(entry)
            continue
        if value is None:
            reason = unmeasured.get(spec.figure) or _missing_reason(spec, figs)
            entry["message"] = f"not measured: {reason}"
            out.append(entry)
            continue
        if spec.regression:
            base = (baseline or {}).get(spec.figure)
            if base is None:
                why = no_baseline if baseline is None else f"the baseline row has no {spec.figure}"
                entry.update(verdict=NO_BASELINE, message=f"no baseline to compare with ({why})")
                out.append(entry)
                continue
            entry.update(_regression(spec, limit, value, base, figs, baseline))
        else:
            entry.update(_absolute(spec, limit, value, figs))
        out.append(entry)
    return out


def _missing_reason(spec: Budget, figs: dict[str, Any]) -> str:
    if spec.latency:
        return "no device to measure on (pass --device local|ssh://... or --server URL)"
    if spec.figure in ("accuracy_drop_points", "artifact_accuracy"):
        return "the build has no accuracy on labelled eval data"
    if spec.figure == "compression_rate":
        return "the source model could not be converted to a float .tflite for the comparison"
    return f"the build does not report {spec.figure}"


def _absolute(spec: Budget, limit: float, value: float, figs: dict[str, Any]) -> dict[str, Any]:
    ok = value <= limit if spec.rule == "max" else value >= limit
    verb = ("within" if ok else "exceeds") if spec.rule == "max" else ("meets" if ok else "is below")
    if spec.name == "max_accuracy_drop":
        text = (f"accuracy drop {value:.2f} points (float {figs['float_accuracy'] * 100:.2f} %, artifact "
                f"{figs['artifact_accuracy'] * 100:.2f} %) {verb} {spec.name} {_num(limit)}")
    elif spec.name == "max_bytes":
        text = f"{figs['artifact']} is {value:,} bytes, {verb} {spec.name} {_num(limit)}"
    elif spec.name == "min_compression_rate":
        text = (f"compression {value:.2f}x (float .tflite {figs['float_tflite_bytes']:,} bytes / {figs['artifact']} "
                f"{figs['bytes']:,} bytes) {verb} {spec.name} {_num(limit)}")
    elif spec.name == "min_edgetpu_op_share":
        text = (f"{figs.get('edgetpu_ops_on_tpu')} of {figs.get('edgetpu_ops')} ops ({value * 100:.1f} %) on the Edge TPU "
                f"{verb} {spec.name} {_num(limit)}")
        if not ok and figs.get("edgetpu_first_cpu_op"):
            first = figs["edgetpu_first_cpu_op"]
            text += f"; the first CPU op: {first.get('op', first) if isinstance(first, dict) else first}"
    elif spec.latency:  # max_latency_p50_ms, max_latency_p90_ms
        text = (f"{spec.statistic} latency {value:.4f} ms on {figs.get('latency_device')} over "
                f"{figs.get('latency_runs')} runs {verb} {spec.name} {_num(limit)}")
    else:
        text = f"{spec.figure} {value} {verb} {spec.name} {_num(limit)}"
    return {"value": value, "verdict": PASSED if ok else FAILED, "message": text}


def _regression(spec: Budget, limit: float, value: float, base: float, figs: dict[str, Any],
                baseline: dict[str, Any]) -> dict[str, Any]:
    if spec.rule == "growth_pct":
        growth = (value / base - 1) * 100 if base else 0.0
        ok = growth <= limit + 1e-9
        text = (f"{figs['artifact']} is {value:,} bytes, {growth:+.2f} % against the baseline's {base:,}, "
                f"{'within' if ok else 'exceeds'} {spec.name} {_num(limit)}")
        return {"value": round(growth, 4), "baseline": base, "verdict": PASSED if ok else FAILED, "message": text,
                "regression": growth > 0}
    if spec.rule == "drop_points":
        fall = (base - value) * 100
        ok = fall <= limit + 1e-9
        text = (f"accuracy {value * 100:.2f} % is {fall:.2f} points below the baseline's {base * 100:.2f} %, "
                f"{'within' if ok else 'exceeds'} {spec.name} {_num(limit)}")
        if fall < 0:
            text = (f"accuracy {value * 100:.2f} % is {-fall:.2f} points above the baseline's {base * 100:.2f} %, "
                    f"within {spec.name} {_num(limit)}")
        return {"value": round(fall, 4), "baseline": base, "verdict": PASSED if ok else FAILED, "message": text,
                "regression": fall > 0}
    # p90 latency: the baseline's p90 plus its spread, then LIMIT % more
    spread = float(baseline.get("latency_std_ms") or 0.0)
    allowed = base * (1 + limit / 100) + spread
    growth = (value / base - 1) * 100 if base else 0.0
    ok = value <= allowed
    text = (f"p90 latency {value:.4f} ms is {growth:+.1f} % against the baseline's {base:.4f} ms (spread {spread:.4f} ms); "
            f"{spec.name} {_num(limit)} allows up to {allowed:.4f} ms: {'within' if ok else 'exceeded'}")
    return {"value": round(growth, 4), "baseline": base, "allowed": round(allowed, 6),
            "verdict": PASSED if ok else FAILED, "message": text, "regression": value > base + spread}


def check_verdicts(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The build's own checks (``full_integer``: an int8 artifact computing ops in float) as verdicts."""
    return [{"name": c["name"] + (f" ({c['artifact']})" if c.get("artifact") else ""), "check": True,
             "limit": c.get("limit"), "value": c.get("value"), "verdict": PASSED if c["passed"] else FAILED,
             "message": c["message"]} for c in checks]
