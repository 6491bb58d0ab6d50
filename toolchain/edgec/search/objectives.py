"""A search's objectives and its Pareto front: each objective's direction, its value in a trial's
result, and which trials no other trial beats on every objective. The trials (which hand Optuna
these values) and the reports (which show the front) both read them from here."""

from __future__ import annotations

from typing import Any

from edgec.studies import feasible

OBJECTIVES = {  # name -> (direction, unit, what)
    "accuracy": ("maximize", "%", "artifact accuracy on the eval data"),
    "latency": ("minimize", "ms", "median (p50) latency on the device"),
    "size": ("minimize", "B", "artifact bytes after zstd"),
    "bytes": ("minimize", "B", "artifact bytes"),
    "params": ("minimize", "", "non-zero parameters"),
    "energy": ("minimize", "mJ", "energy per inference on the device"),
}
DEFAULT_OBJECTIVES = ("accuracy", "latency", "size")


def objective_value(name: str, result: dict[str, Any]) -> float | None:
    if name == "accuracy":
        return result["accuracy"]
    if name == "latency":
        return result["latency"]["p50_ms"]
    if name == "size":
        return result["zstd_bytes"]
    if name == "bytes":
        return result["bytes"]
    if name == "params":
        return result["nonzero_params"]
    if name == "energy":
        return result["latency"]["energy_mj"]
    raise KeyError(name)


def directions(objectives: list[str]) -> list[str]:
    return [OBJECTIVES[o][0] for o in objectives]


def dominates(a: list[float], b: list[float], dirs: list[str]) -> bool:
    """``a`` is at least as good as ``b`` on every objective and better on one."""
    better = False
    for x, y, d in zip(a, b, dirs, strict=True):
        if d == "maximize":
            x, y = -x, -y
        if x > y:
            return False
        better = better or x < y
    return better


def front_trials(trials, objectives: list[str]) -> list:
    """Complete, feasible trials no other such trial dominates; a configuration measured by several
    trials (reused results) appears once, under its first trial."""
    dirs = directions(objectives)
    seen: set[str] = set()
    candidates = []
    for t in sorted(trials, key=lambda t: t.number):
        if t.state.name != "COMPLETE" or not t.user_attrs.get("result") or not feasible(t):
            continue
        key = t.user_attrs.get("key")
        if key in seen:
            continue
        seen.add(key)
        candidates.append((t, [objective_value(o, t.user_attrs["result"]) for o in objectives]))
    return [t for t, v in candidates if not any(dominates(w, v, dirs) for _, w in candidates)]
