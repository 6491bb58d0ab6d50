"""What a long-running collector is held to: what a server process holds (open files, memory,
database connections, read from /proc and pg_stat_activity) and a mixed workload of the fleet's
requests (enrollment, register, lease, heartbeat, results, reads, health), shared by the soak test
and bench/bench_soak.py."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path


def open_files(pid: int) -> int:
    """Descriptors the process holds (Linux /proc/PID/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mb(pid: int) -> float:
    """Resident memory of the process in MiB (VmRSS of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def db_connections(pid: int, url: str | None) -> int | None:
    """Server-side connections that the collector process ``pid`` holds on PostgreSQL (by the
    application name it gives them); None for SQLite."""
    if not url:
        return None
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                            (f"edgec serve {pid}",)).fetchone()[0]


def sample(pid: int, url: str | None = None) -> dict:
    """fds, RSS (MiB) and database connections of a collector process now."""
    return {"fds": open_files(pid), "rss_mb": rss_mb(pid), "db": db_connections(pid, url)}


class Workload:
    """The fleet's requests against one collector, from ``threads`` simulated devices, each with
    its own credential (enrolled through the API) and its own jobs.

    Args:
        url: the collector.
        token: its admin token.
        build: an x86-cpu build directory (its artifact is uploaded once).
        report: a real agent report of that artifact.
        threads: devices driving requests at once.
        verify: what HTTPS is verified against.
    """

    CYCLE = 10  # requests per cycle of one device

    def __init__(self, url: str, token: str, build: Path, report: dict, threads: int = 4, verify=True):
        import httpx

        from edgec.util import sha256_file

        self.url = url
        self.admin = {"Authorization": f"Bearer {token}"}
        self.report = report
        self.threads = threads
        self.verify = verify
        self.errors: list[str] = []
        self.latencies: list[tuple[str, float]] = []
        self.requests = 0
        self._lock = threading.Lock()
        manifest = json.loads((build / "manifest.json").read_text())
        record = manifest["artifacts"][0]
        sha = sha256_file(build / record["file"])
        self.job = {"files": {record["file"]: sha}, "target": record["file"], "runtime": "litert",
                    "artifact": record, "manifest": manifest, "lease_seconds": 600}
        with httpx.Client(base_url=url, headers=self.admin, timeout=60, verify=verify) as c:
            r = c.put(f"/v1/blobs/{sha}", content=(build / record["file"]).read_bytes())
            assert r.status_code in (200, 201), r.text
        self.devices = [self._enroll(f"soak-{i}-{uuid.uuid4().hex[:6]}") for i in range(threads)]

    def _enroll(self, name: str) -> dict:
        import httpx

        with httpx.Client(base_url=self.url, headers=self.admin, timeout=60, verify=self.verify) as c:
            token = c.post(f"/v1/devices/{name}/enroll", json={}).json()["enrollment_token"]
            r = c.post("/v1/enroll", json={"device": name}, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 201, r.text
            credential = r.json()["credential"]
        return {"name": name, "auth": {"Authorization": f"Bearer {credential}"}, "instance": uuid.uuid4().hex}

    def run(self, requests: int) -> None:
        """About ``requests`` requests (whole cycles), spread over the devices."""
        cycles = max(1, requests // (self.CYCLE * self.threads))
        workers = [threading.Thread(target=self._device, args=(dev, cycles)) for dev in self.devices]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    def _call(self, client, what: str, method: str, path: str, expect: tuple[int, ...], **kwargs):
        t0 = time.perf_counter()
        try:
            r = client.request(method, path, **kwargs)
        except Exception as exc:  # noqa: BLE001 - counted as an error of the workload
            with self._lock:
                self.errors.append(f"{what}: {type(exc).__name__}: {exc}")
            return None
        elapsed = time.perf_counter() - t0
        with self._lock:
            self.requests += 1
            self.latencies.append((what, elapsed))
            if r.status_code not in expect:
                self.errors.append(f"{what}: {r.status_code} {r.text[:200]}")
                return None
        return r

    def _device(self, dev: dict, cycles: int) -> None:
        import httpx

        name, instance = dev["name"], dev["instance"]
        admin = httpx.Client(base_url=self.url, headers=self.admin, timeout=60, verify=self.verify)
        me = httpx.Client(base_url=self.url, headers=dev["auth"], timeout=60, verify=self.verify)
        register = {"device": name, "instance": instance, "profile": "x86-cpu", "labels": {},
                    "runtimes": {"litert": "2.3.0"}, "schema_version": 1}
        with admin, me:
            self._call(me, "register", "POST", "/v1/devices/register", (200,), json=register)
            for _ in range(cycles):
                self._call(admin, "create job", "POST", "/v1/jobs", (201,), json={**self.job, "device": name})
                self._call(me, "health", "GET", "/v1/health", (200,))
                got = self._call(me, "lease", "POST", f"/v1/devices/{name}/lease", (200,),
                                 json={"instance": instance, "wait": 0})
                if got is None:
                    continue
                lease = got.json()
                self._call(me, "heartbeat", "POST", f"/v1/devices/{name}/heartbeat", (200,),
                           json={"instance": instance, "leases": [lease["lease_id"]]})
                posted = self._call(me, "post result", "POST", "/v1/results", (201,), json={
                    "uid": uuid.uuid4().hex, "job_id": lease["job_id"], "lease_id": lease["lease_id"],
                    "device": name, "instance": instance, "report": self.report})
                if posted is not None:
                    self._call(me, "get result", "GET", f"/v1/results/{posted.json()['result_id']}", (200,))
                self._call(admin, "get job", "GET", f"/v1/jobs/{lease['job_id']}", (200,))
                self._call(admin, "list devices", "GET", "/v1/devices", (200,))
                self._call(me, "health", "GET", "/v1/health", (200,))
                self._call(admin, "list jobs", "GET", "/v1/jobs?limit=20", (200,))

    def take_latencies(self) -> list[tuple[str, float]]:
        """The latencies recorded since the last call (what, seconds)."""
        with self._lock:
            out, self.latencies = self.latencies, []
        return out
