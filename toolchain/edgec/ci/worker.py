"""The builds of a CI run, in worker processes: one process per group of rows of one model.

A group's rows share one :class:`edgec.pipeline.BuildSession`: the model is loaded and evaluated
once, each fine-tune runs once per QAT scheme. The worker reports each row as it starts and ends,
so a process that dies (a crash in native code, out of memory) fails the row it was building, and
the rows it had not started are built again in a fresh process.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
import traceback
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def build_rows(tasks: list[dict[str, Any]], send) -> None:
    """Build ``tasks`` in order with shared stages; ``send`` gets ``("start", id)`` and
    ``("done", result)`` messages. Errors become results, never exceptions."""
    from edgec.errors import EdgecError
    from edgec.pipeline import BuildSession, plan

    session = BuildSession()
    for task in tasks:
        send(("start", task["id"]))
        t0 = time.perf_counter()
        result: dict[str, Any] = {"id": task["id"], "ok": False, "error": None, "manifest": None,
                                  "float_tflite_bytes": None, "reused": []}
        try:
            request = plan(task["model"], task["profile"], **task["options"])
            built = session.run(request, out_dir=Path(task["out_dir"]))
            result.update(ok=True, manifest=built.manifest, reused=list(built.reused))
            try:
                data, _, _ = session.inputs(request)
                result["float_tflite_bytes"] = len(session.float_tflite(request, data))
            except Exception as exc:  # the row is built; only its compression figure is missing
                log.warning("%s: no float .tflite to compare sizes with: %s", task["id"], exc)
        except EdgecError as exc:
            result["error"] = str(exc)
        except Exception as exc:  # a bug, or a library failing: the row fails with it, the others go on
            result["error"] = f"internal error ({type(exc).__name__}: {exc})"
            result["traceback"] = traceback.format_exc()
        result["wall_s"] = round(time.perf_counter() - t0, 3)
        send(("done", result))


def _child(tasks: list[dict[str, Any]], conn, level: int) -> None:
    import os

    os.environ.setdefault("EDGEC_PROGRESS", "0")
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    import edgec  # noqa: F401  (sets the Keras environment before TensorFlow loads)

    try:
        build_rows(tasks, conn.send)
    finally:
        conn.close()


def run_groups(groups: list[list[dict[str, Any]]], jobs: int, on_result, child=None, on_start=None) -> None:
    """Build each group in a worker process, ``jobs`` at a time; ``on_result(result)`` for each row.

    A worker that dies fails the row it was building (with its exit code) and its unstarted rows
    go to a new worker. ``child(tasks, conn, level)`` is what a worker runs (default: the builds);
    ``on_start(row_id)`` is called as a worker starts a row.
    """
    ctx = multiprocessing.get_context("spawn")
    pending = [list(g) for g in groups if g]
    running: dict[Any, dict[str, Any]] = {}  # connection -> worker state
    level = logging.getLogger().getEffectiveLevel()
    while pending or running:
        while pending and len(running) < max(1, jobs):
            tasks = pending.pop(0)
            parent, child_end = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=child or _child, args=(tasks, child_end, level), daemon=True)
            proc.start()
            child_end.close()
            running[parent] = {"proc": proc, "tasks": tasks, "current": None, "done": set(), "t0": time.perf_counter()}
        ready = wait(list(running))
        for conn in ready:
            state = running[conn]
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                proc = state["proc"]
                proc.join()
                del running[conn]
                conn.close()
                left = [t for t in state["tasks"] if t["id"] not in state["done"]]
                code = proc.exitcode
                how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                if state["current"] is not None:
                    on_result(_failed(state["current"], f"the build process died ({how}) while building this row",
                                      time.perf_counter() - state["started"]))
                    left = [t for t in left if t["id"] != state["current"]]
                elif left:  # it died before its first row: another process would too
                    for task in left:
                        on_result(_failed(task["id"], f"the build process exited ({how}) before building this row", 0.0))
                    left = []
                if left:
                    pending.append(left)
                continue
            if kind == "start":
                state["current"], state["started"] = payload, time.perf_counter()
                if on_start is not None:
                    on_start(payload)
            else:
                state["done"].add(payload["id"])
                state["current"] = None
                on_result(payload)


def _failed(row_id: str, error: str, seconds: float) -> dict[str, Any]:
    return {"id": row_id, "ok": False, "manifest": None, "float_tflite_bytes": None, "reused": [],
            "wall_s": round(seconds, 3), "error": error}
