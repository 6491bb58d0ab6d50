"""A collector left running for minutes: what it holds over time under the fleet's requests.

A real `edgec serve` per backend (SQLite; PostgreSQL where a throwaway cluster of the installed
server can start, as the tests start it) takes the mixed workload of tests/collector/soak.py
(enrollment once, then per device: queue a job, lease, heartbeat, post the result, read it back,
list jobs and devices, health) at a steady rate, with idle pauses in between (the lease reaper
reads the record meanwhile). Every ``--every`` seconds it prints one row of the curves: open files
(/proc/PID/fd), resident memory (/proc/PID/status), the database connections the process holds
(pg_stat_activity, by the application name the collector gives them), the pool's connections in
use (/v1/health) and the p50/p99 latency of the requests of that window. A server that leaks shows
rising columns; a sound one shows flat ones. The last lines give the start and end values.

Usage: python bench/bench_soak.py [--minutes 10] [--rate 40] [--every 30] [--backends sqlite postgresql]
       [--workdir DIR] (a workdir keeps the digits build and its report between runs)
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EDGEC_PROGRESS", "0")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def prepared(workdir: Path) -> tuple[Path, dict]:
    """The int8 digits build and a real agent report of it (made once per workdir)."""
    import json

    from bench_collector import build_int8, real_report

    marker = workdir / "build-dir.txt"
    if marker.exists() and (workdir / "report.json").exists():
        return Path(marker.read_text().strip()), json.loads((workdir / "report.json").read_text())
    build = build_int8(workdir)
    report = real_report(build, workdir)
    marker.write_text(str(build))
    return build, report


def start_serve(db: str, home: Path, *args: str) -> tuple[subprocess.Popen, str, str]:
    """`edgec serve` on a free loopback port: (process, URL, admin token)."""
    import httpx

    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "edgec", "serve", "--port", "0", "--db", db, "--token-file",
                             str(home / "token"), "--blobs", str(home / "blobs"), *args],
                            stdout=subprocess.PIPE, stderr=open(home / "serve.log", "a"), text=True, cwd=REPO)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    url = lines.get(timeout=120).split(" on ", 1)[1].split()[0]
    token = (home / "token").read_text().strip()
    for _ in range(300):
        try:
            if httpx.get(url + "/v1/health", headers={"Authorization": f"Bearer {token}"}, timeout=2).is_success:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return proc, url, token


def pg_cluster():
    """A throwaway PostgreSQL cluster, or None with the reason printed."""
    try:
        import psycopg  # noqa: F401

        from tests.postgres import PostgresServer, find_bindir, server_user

        bindir = find_bindir()
        user, problem = server_user()
        if bindir is None or problem:
            raise RuntimeError(problem or "PostgreSQL server binaries not found")
        return PostgresServer(bindir, user).start()
    except (ImportError, RuntimeError, OSError) as exc:
        print(f"PostgreSQL: not measured ({exc})")
        return None


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    pos = (len(values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def soak(backend: str, db: str, pg_url: str | None, home: Path, build: Path, report: dict, args) -> list[dict]:
    import httpx

    from tests.collector import soak as probe

    proc, url, token = start_serve(db, home, "--db-pool", str(args.db_pool))
    rows: list[dict] = []
    try:
        work = probe.Workload(url, token, build, report, threads=args.devices)
        work.run(100)  # warm
        work.take_latencies()
        print(f"\n[{backend}] {args.minutes:g} min, about {args.rate} requests/s in bursts of {args.every / 2:g} s "
              f"then as long idle, {args.devices} devices, --db-pool {args.db_pool}")
        header = (f"{'t s':>6} {'fds':>5} {'RSS MiB':>8} {'db conns':>8} {'pool in use':>11} {'requests':>9} "
                  f"{'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
        print(header)
        print("-" * len(header))
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        total = 0

        def row(elapsed: float, window: list[float]) -> None:
            s = probe.sample(proc.pid, pg_url)
            health = httpx.get(url + "/v1/health", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
            ms = [t * 1000 for t in window]
            r = {"t": elapsed, **s, "in_use": health["database"]["pool"]["in_use"], "requests": total,
                 "p50": statistics.median(ms) if ms else float("nan"), "p99": percentile(ms, 99),
                 "errors": len(work.errors)}
            rows.append(r)
            print(f"{r['t']:6.0f} {r['fds']:5d} {r['rss_mb']:8.1f} {('-' if r['db'] is None else r['db']):>8} "
                  f"{r['in_use']:11d} {r['requests']:9d} {r['p50']:7.2f} {r['p99']:7.2f} {r['errors']:6d}",
                  flush=True)

        row(0.0, [])
        while time.monotonic() < end:
            window_end = min(end, time.monotonic() + args.every)
            busy_until = time.monotonic() + args.every / 2
            while time.monotonic() < min(busy_until, window_end):
                tick = time.monotonic()
                before = work.requests
                work.run(args.rate)
                total += work.requests - before
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
            time.sleep(max(0.0, window_end - time.monotonic()))  # idle: only the reaper works
            row(time.monotonic() - t0, [t for _, t in work.take_latencies()])
        if work.errors:
            print(f"[{backend}] first errors: {work.errors[:3]}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    first, last = rows[0], rows[-1]
    print(f"[{backend}] start -> end: fds {first['fds']} -> {last['fds']}, RSS {first['rss_mb']:.1f} -> "
          f"{last['rss_mb']:.1f} MiB, db connections {first['db'] if first['db'] is not None else '-'} -> "
          f"{last['db'] if last['db'] is not None else '-'}, {last['requests']} requests, {last['errors']} errors")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=40, help="requests per second while busy")
    parser.add_argument("--every", type=float, default=30.0, help="seconds per row (half busy, half idle)")
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--db-pool", type=int, default=4)
    parser.add_argument("--backends", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    parser.add_argument("--workdir", type=Path, help="keeps the build and report between runs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        build, report = prepared(workdir)
        run_dir = Path(tempfile.mkdtemp(prefix="soak-", dir=workdir))
        for backend in args.backends:
            if backend == "sqlite":
                soak("sqlite", str(run_dir / "collector.db"), None, run_dir / "sqlite", build, report, args)
                continue
            pg = pg_cluster()
            if pg is None:
                continue
            try:
                url = pg.create_database()
                soak("postgresql", url, url, run_dir / "postgresql", build, report, args)
            finally:
                pg.stop()


if __name__ == "__main__":
    main()
