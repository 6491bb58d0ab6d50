"""Distributing a run over the jobs of a CI matrix, and joining their results.

:func:`plan` splits the rows into shards of about equal work: by each row's duration in a
baseline run when there is one (its build's stages, as if built alone), else by row count; the
greedy longest-first rule (each row to the least loaded shard) keeps the longest shard within 4/3
of the best split. Each shard runs ``edgec ci --only ...``; :func:`merge` joins their results
documents into one.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from edgec.ci.config import CiConfig
from edgec.ci.runner import document, load_results
from edgec.errors import EdgecError


def plan(config: CiConfig, shards: int, baseline: dict[str, Any] | None = None,
         only: tuple[str, ...] = ()) -> dict[str, Any]:
    """A CI matrix: ``{"include": [{"shard", "of", "rows", "only", "estimate_s"}, ...]}``.

    ``only`` is the ``--only`` arguments of the shard's ``edgec ci`` command. There are at most as
    many shards as rows.

    Raises:
        EdgecError: ``shards`` < 1.
    """
    if shards < 1:
        raise EdgecError(f"--shards must be at least 1, got {shards}")
    rows = config.select(only)
    known = {r["id"]: r for r in (baseline or {}).get("rows", [])}

    def cost(row_id: str) -> float | None:
        durations = (known.get(row_id) or {}).get("durations_s") or {}
        value = durations.get("standalone") or durations.get("wall")
        return float(value) if value else None

    costs = {row.id: cost(row.id) for row in rows}
    measured = [c for c in costs.values() if c]
    default = sum(measured) / len(measured) if measured else 1.0
    estimate = {rid: c if c else default for rid, c in costs.items()}
    n = min(shards, len(rows))
    loads = [0.0] * n
    members: list[list[str]] = [[] for _ in range(n)]
    order = sorted(range(len(rows)), key=lambda i: (-estimate[rows[i].id], i))
    for i in order:
        k = min(range(n), key=lambda j: (loads[j], j))
        loads[k] += estimate[rows[i].id]
        members[k].append(rows[i].id)
    index = {row.id: i for i, row in enumerate(rows)}
    include = []
    for k in range(n):
        ids = sorted(members[k], key=index.__getitem__)
        include.append({"shard": k + 1, "of": n, "rows": ids,
                        "only": " ".join(f"--only {shlex.quote(i)}" for i in ids),
                        "estimate_s": round(loads[k], 1) if measured else None})
    return {"include": include}


def merge(paths: list[str | Path]) -> dict[str, Any]:
    """One results document from the documents of several shards.

    Raises:
        EdgecError: no file, an unreadable one, the same row in two of them, or shards of
            different configs.
    """
    if not paths:
        raise EdgecError("give the results files of the shards: edgec ci merge A.json B.json ...")
    rows: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    docs = [(str(p), load_results(p)) for p in paths]
    configs = {d["config"].get("sha256") for _, d in docs}
    if len(configs) > 1:
        raise EdgecError("the results come from different configs (sha256 "
                         + ", ".join(sorted(str(c)[:12] for c in configs)) + "); merge the shards of one run")
    for path, doc in docs:
        for row in doc["rows"]:
            if row["id"] in seen:
                raise EdgecError(f"row {row['id']} is in both {seen[row['id']]} and {path}; each shard builds other rows")
            seen[row["id"]] = path
            rows.append(row)
    first = docs[0][1]
    measured = sorted({d.get("measured_on") for _, d in docs if d.get("measured_on")})
    return document(rows, config_path=first["config"].get("path"), config_sha256=first["config"].get("sha256"),
                    baseline=first.get("baseline"), measured_on=", ".join(measured) or None, only=[],
                    duration_s=max(d.get("duration_s") or 0 for _, d in docs), merged_from=[p for p, _ in docs])
