"""The agent's report: one versioned JSON document shared by the agent and the host.

The agent builds it (:func:`edgec.agent.bench.run_benchmark`), checks it with :func:`check`
before printing it, and the host (``edgec profile``, later the fleet collector) checks it
again with the same function before storing it. A change to the document's shape bumps
:data:`SCHEMA_VERSION`.

Document (``schema_version`` 1)::

    schema_version  int     1
    kind            str     "edgec-agent-report"
    agent_version   str
    created         str     UTC ISO 8601
    artifact        {path, file, sha256, bytes, format}
    runtime         {name, module, version, threads, delegate, details}
    device          {kind, model, ...}           what the device is (edgec.agent.device.detect)
    system          {...}                        what shapes the number: governor, clocks, temps,
                                                 nvpmodel, jetson_clocks (before and after)
    options         {warmup, runs, min_seconds, batch, seed, input, power, ...}
    inputs          [{name, dtype, shape, source, ...}]
    timings_ms      {load, cold_first_inference}
    latency_ms      {count, min, median, mean, p90, p99, max, std}
    throughput      {inferences_per_s, batch, runs, timed_s}
    power           {available: false, reason} or
                    {available: true, sensor, scope, rails, total_rail, idle_w, active_w,
                     mean_w, peak_w, energy_mj_per_inference: {total, above_idle},
                     samples: {idle, active, total}, rate_hz, windows_s: {idle, active}}
    warnings        [str]
"""

import math

from .errors import AgentError

SCHEMA_VERSION = 1
KIND = "edgec-agent-report"

_NUM = "number"
_OPT_NUM = "number or null"
_OPT_STR = "string or null"
_OPT_INT = "integer or null"

FIELDS = {
    "schema_version": int,
    "kind": str,
    "agent_version": str,
    "created": str,
    "artifact": {"path": str, "file": str, "sha256": str, "bytes": int, "format": str},
    "runtime": {"name": str, "module": _OPT_STR, "version": _OPT_STR, "threads": _OPT_INT,
                "delegate": _OPT_STR, "details": dict},
    "device": {"kind": str, "model": str},
    "system": dict,
    "options": dict,
    "inputs": list,
    "timings_ms": {"load": _NUM, "cold_first_inference": _NUM},
    "latency_ms": {"count": int, "min": _NUM, "median": _NUM, "mean": _NUM, "p90": _NUM,
                   "p99": _NUM, "max": _NUM, "std": _NUM},
    "throughput": {"inferences_per_s": _NUM, "batch": int, "runs": int, "timed_s": _NUM},
    "power": {"available": bool},
    "warnings": list,
}

POWER_AVAILABLE = {
    "sensor": str, "scope": str, "rails": list, "total_rail": _OPT_STR, "idle_w": _OPT_NUM,
    "active_w": _NUM, "mean_w": _NUM, "peak_w": _NUM,
    "energy_mj_per_inference": {"total": _NUM, "above_idle": _OPT_NUM},
    "samples": {"idle": int, "active": int, "total": int}, "rate_hz": _NUM,
    "windows_s": {"idle": _NUM, "active": _NUM},
}
POWER_UNAVAILABLE = {"reason": str}


class SchemaError(AgentError):
    """A report that does not follow the document above; ``problems`` lists each one."""

    def __init__(self, problems):
        self.problems = list(problems)
        shown = "; ".join(self.problems[:5])
        more = " (+%d more)" % (len(self.problems) - 5) if len(self.problems) > 5 else ""
        super().__init__("invalid agent report: " + shown + more)


_INT64 = 2 ** 63


def _is_int(value):
    # SQLite stores 64-bit integers: a larger one cannot be kept, so it is not a valid report.
    return isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value < _INT64


def _type_ok(value, kind):
    if kind == _NUM:
        if isinstance(value, float):
            return math.isfinite(value)
        return _is_int(value)
    if kind == _OPT_NUM:
        return value is None or _type_ok(value, _NUM)
    if kind == _OPT_STR:
        return value is None or isinstance(value, str)
    if kind == _OPT_INT:
        return value is None or _is_int(value)
    if kind is int:
        return _is_int(value)
    return isinstance(value, kind)


def _type_name(kind):
    return kind if isinstance(kind, str) else {int: "integer", str: "string", bool: "boolean",
                                                dict: "object", list: "array"}.get(kind, str(kind))


def _walk(doc, fields, where, problems):
    if not isinstance(doc, dict):
        problems.append("%s: expected an object, got %s" % (where or "report", type(doc).__name__))
        return
    for key, kind in fields.items():
        path = (where + "." + key) if where else key
        if key not in doc:
            problems.append("%s: missing" % path)
            continue
        value = doc[key]
        if isinstance(kind, dict):
            _walk(value, kind, path, problems)
        elif not _type_ok(value, kind):
            problems.append("%s: expected %s, got %r" % (path, _type_name(kind), value))


def validate(doc):
    """Every problem with ``doc`` as a list of strings (empty when it is a valid report)."""
    problems = []
    if not isinstance(doc, dict):
        return ["report: expected a JSON object, got %s" % type(doc).__name__]
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            return ["schema_version %d is newer than this reader understands (%d); update edgec"
                    % (version, SCHEMA_VERSION)]
        return ["schema_version: expected %d, got %r" % (SCHEMA_VERSION, version)]
    if doc.get("kind") != KIND:
        problems.append("kind: expected %r, got %r" % (KIND, doc.get("kind")))
    _walk(doc, FIELDS, "", problems)
    power = doc.get("power")
    if isinstance(power, dict) and isinstance(power.get("available"), bool):
        _walk(power, POWER_AVAILABLE if power["available"] else POWER_UNAVAILABLE, "power", problems)
        if not power["available"]:
            # No sensor means no numbers: anything beside the reason would be an invented value.
            extra = sorted(set(power) - {"available", "reason"})
            if extra:
                problems.append("power: unavailable power carries no readings, got %s" % ", ".join(extra))
    latency = doc.get("latency_ms")
    if isinstance(latency, dict) and not problems:
        order = [latency[k] for k in ("min", "median", "p90", "p99", "max")]
        if any(b < a for a, b in zip(order, order[1:])):
            problems.append("latency_ms: expected min <= median <= p90 <= p99 <= max, got %r" % (order,))
        if latency["count"] < 1:
            problems.append("latency_ms.count: expected >= 1, got %r" % latency["count"])
    return problems


def check(doc):
    """Return ``doc`` when it is a valid report.

    Raises:
        SchemaError: naming every problem found.
    """
    problems = validate(doc)
    if problems:
        raise SchemaError(problems)
    return doc
