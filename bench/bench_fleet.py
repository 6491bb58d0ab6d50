"""A fleet on loopback: hundreds to a thousand simulated agents against one collector (SQLite) and
against two collectors on one PostgreSQL database.

Each simulated agent (an asyncio task with its own keep-alive connection, HTTP/1.1 written by
hand to leave the CPUs to the collectors) registers, then loops: long-poll for a lease (``wait`` 10 s),
heartbeat it, post a real agent report as its result (the int8 digits CNN measured by the agent's
bench), and poll again. The jobs (``--jobs-per-agent`` per agent, for the profile every agent has,
so the agents race for each one) are queued before the agents start; a run ends when every job's
result is acknowledged. With two collectors, half of the agents talk to each.

Checked after each run: no request failed, no job was leased twice, and every acknowledged result
is the one the record holds for its job. Reported: lease (answers with a job) and post latency
p50/p99 as the agents saw them, the collectors' CPU per stored result (/proc/PID/stat; the
database's own processes apart), their peak resident memory, and the wall time. The agents run on
the same machine as the collectors and take CPU from them: compare rows of the same run.

Usage: python bench/bench_fleet.py [--agents 100 1000] [--setups sqlite postgresql-2] [--jobs-per-agent 2]
       [--workdir DIR] (a workdir keeps the digits build and its report between runs)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EDGEC_PROGRESS", "0")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_collector_cost import children_of, cpu_seconds  # noqa: E402
from bench_soak import percentile, pg_cluster, prepared, start_serve  # noqa: E402

WAIT = 10.0


class Conn:
    """One simulated agent's keep-alive HTTP/1.1 connection, written by hand: a thousand httpx
    clients would take more of the shared CPUs than the collectors they measure."""

    def __init__(self, url: str, token: str):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.token = token
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | None]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        data = json.dumps(body).encode() if body is not None else b""
        self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.token}\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
        await self.writer.drain()
        status = await self.reader.readline()
        if not status:
            self.close()
            raise ConnectionError(f"{method} {path}: the collector closed the connection")
        length = 0
        close = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        payload = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return int(status.split()[1]), (json.loads(payload) if payload else None)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Fleet:
    """The simulated agents of one run and what they saw."""

    def __init__(self, urls: list[str], token: str, jobs: int, report: dict, agents: int):
        self.urls = urls
        self.token = token
        self.jobs = jobs
        self.report = report
        self.agents = agents
        self.errors: list[str] = []
        self.grants: dict[int, int] = {}
        self.acked: dict[int, int] = {}
        self.lease_s: list[float] = []
        self.post_s: list[float] = []
        self.done = asyncio.Event()

    async def agent(self, conn: Conn, name: str) -> None:
        try:
            await self._agent(conn, name)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
        finally:
            conn.close()

    async def _agent(self, conn: Conn, name: str) -> None:
        instance = uuid.uuid4().hex
        status, doc = await conn.request("POST", "/v1/devices/register", {
            "device": name, "instance": instance, "profile": "x86-cpu", "runtimes": {"litert": "2.3.0"},
            "schema_version": 1})
        if status != 200:
            self.errors.append(f"register {status} {doc}")
            return
        while not self.done.is_set():
            t0 = time.perf_counter()
            status, lease = await conn.request("POST", f"/v1/devices/{name}/lease", {"instance": instance, "wait": WAIT})
            elapsed = time.perf_counter() - t0
            if status == 204:
                continue
            if status != 200:
                self.errors.append(f"lease {status} {lease}")
                await asyncio.sleep(1)
                continue
            self.lease_s.append(elapsed)
            self.grants[lease["job_id"]] = self.grants.get(lease["job_id"], 0) + 1
            status, beat = await conn.request("POST", f"/v1/devices/{name}/heartbeat",
                                              {"instance": instance, "leases": [lease["lease_id"]]})
            if status != 200 or beat["leases"][lease["lease_id"]] != "active":
                self.errors.append(f"heartbeat {status} {beat}")
            t0 = time.perf_counter()
            status, out = await conn.request("POST", "/v1/results", {
                "uid": uuid.uuid4().hex, "job_id": lease["job_id"], "lease_id": lease["lease_id"], "device": name,
                "instance": instance, "report": self.report})
            self.post_s.append(time.perf_counter() - t0)
            if status != 201:
                self.errors.append(f"post {status} {out}")
                continue
            self.acked[lease["job_id"]] = out["result_id"]
            if len(self.acked) >= self.jobs:
                self.done.set()

    async def run(self) -> float:
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(self.agent(Conn(self.urls[i % len(self.urls)], self.token), f"fleet-{i:04d}"))
                 for i in range(self.agents)]
        finished = asyncio.create_task(self.done.wait())
        agents = asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.wait([finished, agents], return_when=asyncio.FIRST_COMPLETED)
        wall = time.perf_counter() - t0
        for task in tasks:
            task.cancel()
        finished.cancel()
        await agents
        return wall


def queue_jobs(url: str, token: str, build: Path, count: int) -> None:
    import httpx

    from edgec.util import sha256_file

    manifest = json.loads((build / "manifest.json").read_text())
    record = manifest["artifacts"][0]
    sha = sha256_file(build / record["file"])
    body = {"files": {record["file"]: sha}, "target": record["file"], "runtime": "litert", "artifact": record,
            "manifest": manifest, "profile": "x86-cpu", "lease_seconds": 600}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        c.put(f"/v1/blobs/{sha}", content=(build / record["file"]).read_bytes()).raise_for_status()
        for _ in range(count):
            c.post("/v1/jobs", json=body).raise_for_status()


def check_record(url: str, token: str, fleet: Fleet) -> list[str]:
    """What the record holds against what the agents were told."""
    import httpx

    problems = []
    twice = [job for job, n in fleet.grants.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} job(s) leased more than once: {twice[:5]}")
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
        done = {j["id"]: j["result_id"] for j in c.get("/v1/jobs", params={"state": "done", "limit": 10000}).json()["jobs"]}
    lost = [job for job, result in fleet.acked.items() if done.get(job) != result]
    if lost:
        problems.append(f"{len(lost)} acknowledged result(s) not in the record: {lost[:5]}")
    if len(done) != fleet.jobs:
        problems.append(f"{len(done)} jobs done in the record, {fleet.jobs} queued")
    return problems


def sample_rss(pids: list[int], peak: dict[int, float], stop: threading.Event) -> None:
    from tests.collector.soak import rss_mb

    while not stop.is_set():
        for pid in pids:
            try:
                peak[pid] = max(peak.get(pid, 0.0), rss_mb(pid))
            except (OSError, RuntimeError):
                pass
        stop.wait(0.5)


def one_run(setup: str, agents: int, args, build: Path, report: dict, workdir: Path, pg) -> dict:
    home = workdir / f"{setup}-{agents}-{uuid.uuid4().hex[:6]}"
    if setup == "sqlite":
        dbs = [str(home / "collector.db")]
    else:
        url = pg.create_database()
        dbs = [url] * int(setup.split("-")[1])
    servers = [start_serve(dbs[0], home / "serve0", "--max-poll-seconds", "60")]
    try:
        token = servers[0][2]
        for i, db in enumerate(dbs[1:], start=1):  # one admin token for every collector of the database
            (home / f"serve{i}").mkdir(parents=True)
            (home / f"serve{i}" / "token").write_text(token + "\n")
            os.chmod(home / f"serve{i}" / "token", 0o600)
            servers.append(start_serve(db, home / f"serve{i}", "--max-poll-seconds", "60"))
        jobs = agents * args.jobs_per_agent
        queue_jobs(servers[0][1], token, build, jobs)
        pids = [proc.pid for proc, _, _ in servers]
        postmaster = int((pg.data / "postmaster.pid").read_text().split()[0]) if pg and setup != "sqlite" else None
        db_pids = (lambda: [postmaster, *children_of(postmaster)]) if postmaster else (lambda: [])
        peak: dict[int, float] = {}
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(pids, peak, stop), daemon=True)
        sampler.start()
        cpu0, db0 = cpu_seconds(pids), cpu_seconds(db_pids())
        fleet = Fleet([url for _, url, _ in servers], token, jobs, report, agents)
        wall = asyncio.run(fleet.run())
        cpu, db_cpu = cpu_seconds(pids) - cpu0, cpu_seconds(db_pids()) - db0
        stop.set()
        sampler.join()
        problems = check_record(servers[0][1], token, fleet)
    finally:
        for proc, _, _ in servers:
            proc.terminate()
            proc.wait(timeout=60)
    results = max(1, len(fleet.acked))
    lease_ms = [t * 1000 for t in fleet.lease_s]
    post_ms = [t * 1000 for t in fleet.post_s]
    return {"setup": setup, "agents": agents, "jobs": jobs, "stored": len(fleet.acked), "errors": len(fleet.errors),
            "first_error": fleet.errors[0] if fleet.errors else "", "problems": problems, "wall": wall,
            "lease_p50": statistics.median(lease_ms), "lease_p99": percentile(lease_ms, 99),
            "post_p50": statistics.median(post_ms), "post_p99": percentile(post_ms, 99),
            "cpu_ms": cpu * 1000 / results, "db_cpu_ms": db_cpu * 1000 / results if postmaster else None,
            "rss": max(peak.values()) if peak else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--setups", nargs="+", choices=["sqlite", "postgresql-1", "postgresql-2"],
                        default=["sqlite", "postgresql-2"])
    parser.add_argument("--jobs-per-agent", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="keeps the build and report between runs")
    args = parser.parse_args()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a socket per simulated agent
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        build, report = prepared(workdir)
        pg = pg_cluster() if any(s.startswith("postgresql") for s in args.setups) else None
        rows = []
        try:
            for setup in args.setups:
                if setup.startswith("postgresql") and pg is None:
                    continue
                for agents in args.agents:
                    row = one_run(setup, agents, args, build, report, workdir, pg)
                    rows.append(row)
                    print(f"  {setup} {agents} agents: {row['stored']}/{row['jobs']} results in {row['wall']:.1f} s, "
                          f"{row['errors']} errors {row['first_error'][:120]} {'; '.join(row['problems'])}", flush=True)
        finally:
            if pg is not None:
                pg.stop()
    print(f"\nfleet on loopback: each agent long-polls (wait {WAIT:g} s), heartbeats and posts a real report "
          f"({len(json.dumps(report))} bytes); {args.jobs_per_agent} jobs per agent queued before they start; "
          f"agents and collectors share {os.cpu_count()} CPUs")
    header = (f"{'setup':13} {'agents':>6} {'jobs':>5} {'errors':>6} {'leased 2x':>9} {'lost':>4} {'wall s':>7} "
              f"{'lease p50/p99 ms':>17} {'post p50/p99 ms':>16} {'CPU ms/result':>13} {'db CPU ms':>9} "
              f"{'peak RSS MiB':>12}")
    print(header)
    print("-" * len(header))
    for r in rows:
        twice = sum(1 for p in r["problems"] if "more than once" in p)
        lost = sum(1 for p in r["problems"] if "not in the record" in p or "jobs done" in p)
        db_cpu = "-" if r["db_cpu_ms"] is None else f"{r['db_cpu_ms']:.2f}"
        print(f"{r['setup']:13} {r['agents']:6d} {r['jobs']:5d} {r['errors']:6d} {twice:9d} {lost:4d} {r['wall']:7.1f} "
              f"{r['lease_p50']:8.1f}/{r['lease_p99']:<8.1f} {r['post_p50']:7.1f}/{r['post_p99']:<8.1f} "
              f"{r['cpu_ms']:13.2f} {db_cpu:>9} "
              f"{r['rss']:12.1f}")


if __name__ == "__main__":
    main()
