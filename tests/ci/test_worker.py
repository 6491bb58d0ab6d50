"""Worker processes: a process that dies fails the row it was building, never the others."""

from __future__ import annotations

import os

from edgec.ci.worker import run_groups


def crashing_child(tasks, conn, level):
    """Builds nothing: reports each row done, and dies hard (no exception, no message) on 'm/crash'."""
    for task in tasks:
        conn.send(("start", task["id"]))
        if task["id"] == "m/crash":
            os._exit(7)
        conn.send(("done", {"id": task["id"], "ok": True, "error": None, "manifest": {}, "wall_s": 0.0,
                            "float_tflite_bytes": None, "reused": [], "pid": os.getpid()}))
    conn.close()


def dying_child(tasks, conn, level):
    os._exit(3)


def test_a_dead_worker_fails_its_row_and_the_rest_go_on():
    results = {}
    groups = [[{"id": "m/a"}, {"id": "m/crash"}, {"id": "m/b"}], [{"id": "n/a"}]]
    run_groups(groups, 2, lambda r: results.setdefault(r["id"], r), child=crashing_child)
    assert set(results) == {"m/a", "m/crash", "m/b", "n/a"}
    assert results["m/crash"]["ok"] is False
    assert results["m/crash"]["error"] == "the build process died (exit code 7) while building this row"
    assert all(results[r]["ok"] for r in ("m/a", "m/b", "n/a"))
    assert results["m/a"]["pid"] != results["m/b"]["pid"]  # the rest of the group went to a new process


def test_a_worker_that_cannot_start_fails_its_rows_once():
    results = []
    run_groups([[{"id": "m/a"}, {"id": "m/b"}]], 1, results.append, child=dying_child)
    assert [r["id"] for r in results] == ["m/a", "m/b"]
    assert all(not r["ok"] and "exited (exit code 3) before building" in r["error"] for r in results)
