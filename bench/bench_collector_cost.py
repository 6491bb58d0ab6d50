"""Server CPU per ingested result: `edgec serve` against a bare FastAPI endpoint, both backends.

For each backend (SQLite: WAL, synchronous=FULL; PostgreSQL: a throwaway cluster of the installed
server, as the tests start it), in one run, side by side:

- ``bare``: bench/bare_ingest.py, a FastAPI endpoint that inserts the posted JSON as one row and
  commits (no token, no validation, no idempotency);
- ``edgec``: a real `edgec serve` storing the same post as a result: bearer token, strict JSON,
  pydantic body, the agent report validator, the current-lease check, the result row and its
  submission, the job and lease updates, all committed before the answer.

Both servers run at once and take the posts in alternating blocks of 50, so the machine's other
load (the clients, other processes) falls on both alike.

Every post is a real agent report (the int8 digits CNN measured by the agent's bench) for its
own leased job, posted by C concurrent clients (httpx, one keep-alive connection each; the jobs
are queued and leased before the clock starts). The server's CPU time is read from
/proc/PID/stat before and after the posts (for PostgreSQL also that of the database's own
processes, in its own column); ratios compare the two servers of the same run and backend.

With ``--dashboard``, a second `edgec serve` takes its share of the blocks while a dashboard is
open on it: a signed-in HTTP client polls the fragments of all four pages at the browser's
intervals (a browser with every page open in a tab), sending the ETag of what it has as the
page's script does (the server answers 304 when nothing changed), and fetches each chart the
fragments name, once per URL, as a browser's cache would. Its CPU per stored result, next to the closed one's,
is what the open dashboard costs the agents' API.

Usage: python bench/bench_collector_cost.py [--posts 500] [--clients 1 8] [--runs 3] [--build DIR]
       [--dashboard]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EDGEC_PROGRESS", "0")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

TICK = os.sysconf("SC_CLK_TCK")
WARMUP = 50


def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU time of ``pids`` (Linux /proc/PID/stat, fields 14 and 15)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def children_of(parent: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    out.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(url: str, headers: dict[str, str]) -> None:
    import httpx

    for _ in range(300):
        try:
            if httpx.get(url + "/v1/health", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


class Bare:
    name = "bare FastAPI insert"

    def __init__(self, db: str, workdir: Path):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "bare_ingest.py"), str(self.port)],
                                     env={**os.environ, "BARE_DB": db}, cwd=workdir, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers: dict[str, str] = {}
        wait_health(self.url, self.headers)

    def bodies(self, report: dict, count: int, device: str) -> list[dict]:
        return [{"uid": uuid.uuid4().hex, "job_id": i + 1, "lease_id": uuid.uuid4().hex, "device": device,
                 "instance": uuid.uuid4().hex, "report": report} for i in range(count)]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Edgec:
    name = "edgec serve"

    def __init__(self, db: str, workdir: Path, build: Path, dashboard: bool = False):
        self.build = build
        self.proc = subprocess.Popen([sys.executable, "-m", "edgec", "serve", "--port", "0", "--db", db,
                                      "--token-file", str(workdir / "token"), "--blobs", str(workdir / "blobs")],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(ln) for ln in self.proc.stdout], daemon=True).start()
        self.url = lines.get(timeout=120).split(" on ", 1)[1].split()[0]
        self.sign_in = lines.get(timeout=120).split()[1]  # "dashboard: URL/login?token=..."
        self.headers = {"Authorization": f"Bearer {(workdir / 'token').read_text().strip()}"}
        wait_health(self.url, self.headers)
        self.poller = Poller(self.url, self.sign_in) if dashboard else None

    def bodies(self, report: dict, count: int, device: str) -> list[dict]:
        import httpx

        from edgec.util import sha256_file

        manifest = json.loads((self.build / "manifest.json").read_text())
        record = manifest["artifacts"][0]
        sha = sha256_file(self.build / record["file"])
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=60) as c:
            c.put(f"/v1/blobs/{sha}", content=(self.build / record["file"]).read_bytes())
            body = {"files": {record["file"]: sha}, "target": record["file"], "runtime": "litert",
                    "artifact": record, "manifest": manifest, "device": device, "lease_seconds": 3600}
            for _ in range(count):
                c.post("/v1/jobs", json=body).raise_for_status()
            instance = uuid.uuid4().hex
            c.post("/v1/devices/register", json={"device": device, "instance": instance, "profile": "x86-cpu",
                                                 "runtimes": {"litert": None}, "schema_version": 1}).raise_for_status()
            leases = [c.post(f"/v1/devices/{device}/lease", json={"instance": instance}).json() for _ in range(count)]
        return [{"uid": uuid.uuid4().hex, "job_id": x["job_id"], "lease_id": x["lease_id"], "device": device,
                 "instance": instance, "report": report} for x in leases]

    def stop(self) -> None:
        if self.poller is not None:
            self.poller.stop()
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Poller(threading.Thread):
    """A signed-in dashboard with every page open: each page's fragment polled at the page's
    interval, each chart URL the fragments name fetched once."""

    def __init__(self, url: str, sign_in: str):
        super().__init__(daemon=True)
        import httpx

        from edgec.collector.dashboard.pages import REFRESH_S

        self.client = httpx.Client(base_url=url, timeout=60)
        assert self.client.get(sign_in).status_code == 200, "the dashboard's sign-in link was refused"
        self.every = {f"/fragments/{page}": REFRESH_S[page] for page in ("fleet", "queue", "results", "search")}
        self.seen: set[str] = set()
        self.tags: dict[str, str] = {}
        self.requests = 0
        self.unchanged = 0  # polls answered 304
        self.rounds = {path: 0 for path in self.every}  # polls done (with the charts they named)
        self.error: BaseException | None = None
        self.halt = threading.Event()
        self.start()

    def run(self) -> None:
        try:
            self._poll()
        except BaseException as exc:  # noqa: BLE001 - reported by alive(): a dead poller voids the figures
            self.error = exc

    def alive(self) -> None:
        if not self.is_alive() or self.error is not None:
            raise SystemExit(f"the dashboard poller stopped: {self.error!r}")

    def _poll(self) -> None:
        import re

        due = {path: 0.0 for path in self.every}
        while not self.halt.is_set():
            now = time.monotonic()
            for path, at in due.items():
                if at <= now:
                    tag = self.tags.get(path)
                    r = self.client.get(path, headers={"If-None-Match": tag} if tag else {})
                    self.requests += 1
                    due[path] = now + self.every[path]
                    if r.status_code == 304:
                        self.unchanged += 1
                        self.rounds[path] += 1
                        continue
                    if r.status_code != 200:
                        raise RuntimeError(f"dashboard poll {path}: {r.status_code} {r.text[:200]}")
                    if r.headers.get("etag"):
                        self.tags[path] = r.headers["etag"]
                    for src in re.findall(r'src="(/charts/[^"]+)"', r.text):
                        src = src.replace("&amp;", "&")
                        if src not in self.seen:
                            self.seen.add(src)
                            if self.client.get(src).status_code != 200:
                                raise RuntimeError(f"dashboard chart {src}: not served")
                            self.requests += 1
                    self.rounds[path] += 1
            self.halt.wait(max(0.05, min(due.values()) - time.monotonic()))

    def settle(self, timeout: float = 120.0) -> None:
        """Wait until each page has been polled once after now (and the charts it names fetched):
        the dashboard shows what the warm-up stored, as a browser left open on it does."""
        start = {p: n for p, n in self.rounds.items() if p != "/fragments/search"}  # Search: 10 s
        deadline = time.monotonic() + timeout
        while any(self.rounds[p] < start[p] + 2 for p in start) and time.monotonic() < deadline:
            self.alive()
            time.sleep(0.1)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=60)
        self.client.close()


IDLE_S = 15.0


def idle_cpu(server, seconds: float, db_pids=None) -> tuple[float, float, float, float]:
    """(server CPU ms per second, database CPU ms per second, dashboard requests per second,
    share of them answered 304) over ``seconds`` without posts."""
    poller = server.poller
    requests, unchanged = (poller.requests, poller.unchanged) if poller else (0, 0)
    before = cpu_seconds([server.proc.pid])
    db_before = cpu_seconds(db_pids()) if db_pids else 0.0
    time.sleep(seconds)
    cpu = cpu_seconds([server.proc.pid]) - before
    db = (cpu_seconds(db_pids()) - db_before) if db_pids else 0.0
    done = (poller.requests - requests) if poller else 0
    same = (poller.unchanged - unchanged) if poller else 0
    if poller:
        poller.alive()
    return cpu * 1000 / seconds, db * 1000 / seconds, done / seconds, same / done if done else 0.0


def post_all(url: str, headers: dict[str, str], bodies: list[dict], clients: int) -> tuple[float, list[float]]:
    import httpx

    local = threading.local()
    made: list = []

    def send(body):
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, headers=headers, timeout=60)
            made.append(local.client)
        t0 = time.perf_counter()
        r = local.client.post("/v1/results", json=body)
        elapsed = time.perf_counter() - t0
        if r.status_code != 201:
            raise SystemExit(f"{url}: {r.status_code} {r.text[:300]}")
        return elapsed

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        times = list(pool.map(send, bodies))
    wall = time.perf_counter() - start
    for client in made:
        client.close()
    return wall, times


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    pos = (len(values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def measure(servers: dict, report: dict, posts: int, clients: int, db_pids, block: int = 50) -> dict[str, dict]:
    """Both servers of a backend, interleaved: blocks of ``block`` posts, alternately to each
    (alternating which goes first), so a change in the machine's other load falls on both alike."""
    bodies = {kind: srv.bodies(report, posts + WARMUP, f"{kind}-{clients}-{uuid.uuid4().hex[:6]}")
              for kind, srv in servers.items()}
    for kind, srv in servers.items():
        post_all(srv.url, srv.headers, bodies[kind][:WARMUP], clients)
    for srv in servers.values():
        # an open dashboard has shown the warm-up's results (its first charts drawn: matplotlib's
        # import and a first drawing, once per server, are no cost per result)
        if getattr(srv, "poller", None) is not None:
            srv.poller.settle()
    acc = {kind: {"cpu": 0.0, "db": 0.0, "wall": 0.0, "times": []} for kind in servers}
    kinds = list(servers)
    for n, start in enumerate(range(WARMUP, WARMUP + posts, block)):
        for kind in (kinds if n % 2 == 0 else kinds[::-1]):
            srv = servers[kind]
            db_before = cpu_seconds(db_pids()) if db_pids else 0.0
            before = cpu_seconds([srv.proc.pid])
            wall, times = post_all(srv.url, srv.headers, bodies[kind][start:start + block], clients)
            acc[kind]["cpu"] += cpu_seconds([srv.proc.pid]) - before
            acc[kind]["db"] += (cpu_seconds(db_pids()) - db_before) if db_pids else 0.0
            acc[kind]["wall"] += wall
            acc[kind]["times"] += times
    out = {}
    for kind, a in acc.items():
        ms = [t * 1000 for t in a["times"]]
        out[kind] = {"cpu_ms": a["cpu"] * 1000 / len(ms), "db_cpu_ms": a["db"] * 1000 / len(ms) if db_pids else None,
                     "rate": len(ms) / a["wall"], "p50": statistics.median(ms), "p99": percentile(ms, 99)}
    return out


def backends(workdir: Path, wanted: list[str]) -> list[tuple[str, object, object]]:
    """(name, database factory, database CPU pids) per backend available here."""
    out: list[tuple[str, object, object]] = []
    if "sqlite" in wanted:
        out.append(("sqlite", lambda tag: str(workdir / f"{tag}.db"), None))
    if "postgresql" not in wanted:
        return out
    try:
        import psycopg  # noqa: F401

        from tests.postgres import PostgresServer, find_bindir, server_user

        bindir = find_bindir()
        user, problem = server_user()
        if bindir is None or problem:
            raise RuntimeError(problem or "PostgreSQL server binaries not found")
        pg = PostgresServer(bindir, user).start()
    except (ImportError, RuntimeError, OSError) as exc:
        print(f"PostgreSQL: not measured ({exc})")
        return out
    postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    out.append(("postgresql", lambda tag: pg.create_database(), lambda: [postmaster, *children_of(postmaster)]))
    out.append(("_cleanup", pg, None))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=500, help="timed posts per row")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--build", type=Path, help="an x86-cpu build directory (default: build the digits CNN)")
    parser.add_argument("--backends", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    parser.add_argument("--dashboard", action="store_true",
                        help="also an edgec serve with a dashboard open on every page, polling")
    args = parser.parse_args()
    kinds = ("bare", "edgec", "dashboard") if args.dashboard else ("bare", "edgec")
    names = {"bare": "bare FastAPI insert", "edgec": "edgec serve", "dashboard": "serve + dashboard"}
    from bench_collector import build_int8, real_report

    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        workdir = Path(tmp)
        build = args.build or build_int8(workdir)
        report = real_report(build, workdir)
        found = backends(workdir, args.backends)
        cleanup = [x[1] for x in found if x[0] == "_cleanup"]
        found = [x for x in found if x[0] != "_cleanup"]
        rows: dict[tuple[str, str, int], list[dict]] = {}
        idle: dict[tuple[str, str], list[tuple[float, float]]] = {}
        try:
            for run in range(args.runs):
                for backend, make_db, db_pids in found:
                    servers = {}
                    try:
                        for kind in kinds:
                            d = workdir / f"{backend}-{kind}-{run}"
                            d.mkdir()
                            db = make_db(f"{kind}-{run}")
                            servers[kind] = (Bare(db, d) if kind == "bare" else
                                             Edgec(db, d, build, dashboard=kind == "dashboard"))
                        for clients in args.clients:
                            got = measure(servers, report, args.posts, clients, db_pids)
                            if "dashboard" in servers:
                                servers["dashboard"].poller.alive()
                            for kind, row in got.items():
                                rows.setdefault((backend, kind, clients), []).append(row)
                        if args.dashboard:  # no posts: what the polling alone costs, per second
                            for kind in ("edgec", "dashboard"):
                                idle.setdefault((backend, kind), []).append(idle_cpu(servers[kind], IDLE_S, db_pids))
                    finally:
                        for server in servers.values():
                            server.stop()
        finally:
            for pg in cleanup:
                pg.stop()

    size = len(json.dumps(report))
    print(f"\nserver CPU per stored result: {args.posts} timed posts per row (after {WARMUP} untimed), a real agent "
          f"report of {size} bytes per post, {args.runs} runs; median [min-max] over the runs; "
          f"{os.cpu_count()} CPUs shared by the servers and the clients")
    header = (f"{'backend':10} {'server':20} {'clients':>7} {'CPU ms/post':>20} {'vs bare':>18} "
              f"{'db CPU ms/post':>15} {'posts/s':>16} {'p50 ms':>16} {'p99 ms':>16}")
    print(header)
    print("-" * len(header))

    def cell(values: list[float], fmt: str) -> str:
        return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"

    for backend, _, _ in found:
        for clients in args.clients:
            for kind in kinds:
                got = rows[(backend, kind, clients)]
                bare = rows[(backend, "bare", clients)]
                ratios = [g["cpu_ms"] / b["cpu_ms"] for g, b in zip(got, bare, strict=True)]
                db = [g["db_cpu_ms"] for g in got if g["db_cpu_ms"] is not None]
                print(f"{backend:10} {names[kind]:20} {clients:7d} "
                      f"{cell([g['cpu_ms'] for g in got], '.2f'):>20} "
                      f"{(cell(ratios, '.2f') + 'x') if kind != 'bare' else '1':>18} "
                      f"{cell(db, '.2f') if db else '-':>15} {cell([g['rate'] for g in got], '.0f'):>16} "
                      f"{cell([g['p50'] for g in got], '.2f'):>16} {cell([g['p99'] for g in got], '.2f'):>16}")
    if args.dashboard:
        print("\nthe dashboard open against closed: server CPU ms per stored result (same run, backend and "
              "clients; open/closed is the ratio of each run's pair), median [min-max] over the runs")
        header = (f"{'backend':10} {'clients':>7} {'closed ms/result':>20} {'open ms/result':>20} "
                  f"{'open/closed':>20} {'db: open/closed':>20}")
        print(header)
        print("-" * len(header))
        for backend, _, _ in found:
            for clients in args.clients:
                opened, closed = rows[(backend, "dashboard", clients)], rows[(backend, "edgec", clients)]
                ratios = [o["cpu_ms"] / c["cpu_ms"] for o, c in zip(opened, closed, strict=True)]
                db = [o["db_cpu_ms"] / c["db_cpu_ms"] for o, c in zip(opened, closed, strict=True)
                      if o["db_cpu_ms"] and c["db_cpu_ms"]]
                print(f"{backend:10} {clients:7d} {cell([c['cpu_ms'] for c in closed], '.3f'):>20} "
                      f"{cell([o['cpu_ms'] for o in opened], '.3f'):>20} {cell(ratios, '.3f') + 'x':>20} "
                      f"{(cell(db, '.3f') + 'x') if db else '-':>20}")
        print(f"\nno posts, {IDLE_S:g} s per run: CPU ms per second of the server and of the database, "
              "dashboard requests per second and the share answered 304 (nothing changed)")
        for backend, _, _ in found:
            for kind in ("edgec", "dashboard"):
                got = idle[(backend, kind)]
                print(f"{backend:10} {names[kind]:20} server {cell([g[0] for g in got], '.2f')} ms/s, "
                      f"db {cell([g[1] for g in got], '.2f')} ms/s, {cell([g[2] for g in got], '.2f')} requests/s, "
                      f"{cell([100 * g[3] for g in got], '.0f')} % 304")


if __name__ == "__main__":
    main()
