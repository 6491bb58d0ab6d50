"""Result ingest of the collector on loopback: posts per second and latency percentiles.

Starts a real ``edgec serve`` (its own temporary database, synchronous=FULL: every answered post
is on disk), queues and leases jobs for a real int8 digits artifact, then posts a real agent
report for each job from C concurrent clients (httpx, one keep-alive connection each), 10 % of
the posts being re-sent duplicates. For each C it prints the ingest rate, the p50/p99/max
latency of one post, the count stored (must equal the distinct posts) and the rate relative to
one client. The last row is the store alone: the same insert (validation excluded) through the
collector's writer thread in this process, without HTTP, to show what HTTP, JSON and
validation add.

Usage: python bench/bench_collector.py [--posts 1000] [--clients 1 4 8 16] [--build DIR]
(DIR: an x86-cpu build directory of edgec build; default: the digits CNN, built here).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import queue
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("EDGEC_PROGRESS", "0")

REPO = Path(__file__).resolve().parents[1]


def build_int8(workdir: Path) -> Path:
    """Digits CNN (3 epochs: ingest does not depend on accuracy) built int8 for x86-cpu."""
    import numpy as np

    import edgec
    from edgec.examples import digits, make_model, train

    split = digits(seed=0)
    model = make_model("cnn")
    train(model, split, epochs=3, seed=0)
    model.save(workdir / "digits_cnn.keras")
    np.savez(workdir / "calib.npz", x=split.x_train)
    return edgec.build(workdir / "digits_cnn.keras", target="x86-cpu", precision="int8",
                       calib=str(workdir / "calib.npz"), out=workdir / "dist").out_dir


def real_report(build: Path, workdir: Path) -> dict:
    from edgec.agent import bundle

    pyz = bundle.build(str(workdir / "edgec-agent.pyz"))
    out = workdir / "report.json"
    subprocess.run([sys.executable, pyz, "bench", str(build / "model.tflite"), "--runs", "200", "--power", "none",
                    "--out", str(out)], check=True, capture_output=True)
    return json.loads(out.read_text())


def start_server(workdir: Path) -> tuple[subprocess.Popen, str, str]:
    proc = subprocess.Popen([sys.executable, "-m", "edgec", "serve", "--port", "0", "--db", str(workdir / "c.db")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    url = lines.get(timeout=60).split(" on ", 1)[1].split()[0]
    token = (workdir / "token").read_text().strip()
    import httpx

    for _ in range(100):
        try:
            if httpx.get(url + "/v1/health", headers={"Authorization": f"Bearer {token}"}).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return proc, url, token


def leased_jobs(client, build: Path, count: int, device: str) -> list[dict]:
    from edgec.util import sha256_file

    manifest = json.loads((build / "manifest.json").read_text())
    record = manifest["artifacts"][0]
    sha = sha256_file(build / record["file"])
    client.put(f"/v1/blobs/{sha}", content=(build / record["file"]).read_bytes())
    body = {"files": {record["file"]: sha}, "target": record["file"], "runtime": "litert", "artifact": record,
            "manifest": manifest, "device": device, "lease_seconds": 3600}
    for _ in range(count):
        client.post("/v1/jobs", json=body).raise_for_status()
    instance = uuid.uuid4().hex
    client.post("/v1/devices/register", json={"device": device, "instance": instance, "profile": "x86-cpu",
                                              "runtimes": {"litert": None}, "schema_version": 1}).raise_for_status()
    return [{**client.post(f"/v1/devices/{device}/lease", json={"instance": instance}).json(), "instance": instance}
            for _ in range(count)]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    pos = (len(values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def run_level(url: str, token: str, posts: list[dict], clients: int) -> tuple[float, list[float], list[int]]:
    import httpx

    local = threading.local()
    headers = {"Authorization": f"Bearer {token}"}

    def send(body):
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, headers=headers, timeout=60)
        t0 = time.perf_counter()
        r = local.client.post("/v1/results", json=body)
        return time.perf_counter() - t0, r.status_code

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        out = list(pool.map(send, posts))
    elapsed = time.perf_counter() - start
    return elapsed, [t for t, _ in out], [code for _, code in out]


def direct_store(report: dict, build: Path, count: int, workdir: Path) -> tuple[float, list[float]]:
    """The same inserts through the store's writer thread, no HTTP (one caller)."""
    from edgec.collector import storage
    from edgec.collector.storage.store import Store

    manifest = json.loads((build / "manifest.json").read_text())
    record = manifest["artifacts"][0]
    with Store(workdir / "direct.db") as store:
        store.write(storage.blobs.add_blob, record["sha256"], 1)
        spec = {"files": {"model.tflite": record["sha256"]}, "target": "model.tflite", "runtime": "litert",
                "artifact": record, "manifest": manifest, "device": "direct", "options": {}, "timeout_s": 600,
                "max_attempts": 3, "lease_seconds": 3600}
        for _ in range(count):
            store.write(storage.jobs.create_job, spec, 3600)
        instance = uuid.uuid4().hex
        store.write(storage.jobs.register, {"device": "direct", "instance": instance, "profile": "x86-cpu",
                                            "runtimes": {"litert": None}}, None)
        leases = [store.write(storage.jobs.lease, "direct", instance) for _ in range(count)]
        times = []
        start = time.perf_counter()
        for lease in leases:
            t0 = time.perf_counter()
            store.write(storage.results.post_result, uuid.uuid4().hex, "0" * 64, lease["job_id"], lease["lease_id"],
                        "direct", instance, report)
            times.append(time.perf_counter() - t0)
        return time.perf_counter() - start, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=1000, help="posts per level, 10 %% of them duplicates")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--build", type=Path, help="an x86-cpu build directory (default: build the digits CNN)")
    args = parser.parse_args()
    distinct = args.posts - args.posts // 10

    with tempfile.TemporaryDirectory(prefix="bench-collector-") as tmp:
        workdir = Path(tmp)
        build = args.build or build_int8(workdir)
        report = real_report(build, workdir)
        size = len(json.dumps(report))
        proc, url, token = start_server(workdir / "server")
        import httpx

        rows = []
        try:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
                for n_clients in args.clients:
                    leases = leased_jobs(client, build, distinct, f"bench-{n_clients}")
                    posts = [{"uid": uuid.uuid4().hex, "job_id": x["job_id"], "lease_id": x["lease_id"],
                              "device": f"bench-{n_clients}", "instance": x["instance"], "report": report}
                             for x in leases]
                    rng = random.Random(n_clients)
                    posts += [posts[i] for i in rng.sample(range(distinct), args.posts - distinct)]
                    rng.shuffle(posts)
                    elapsed, times, codes = run_level(url, token, posts, n_clients)
                    stored = len({p["uid"] for p, c in zip(posts, codes, strict=True) if c in (200, 201)})
                    rows.append((f"HTTP, {n_clients} client{'s' if n_clients > 1 else ''}", args.posts, stored,
                                 args.posts / elapsed, times, sum(c not in (200, 201) for c in codes)))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        elapsed, times = direct_store(report, build, distinct, workdir)
        rows.append(("store only (no HTTP), 1 caller", distinct, distinct, distinct / elapsed, times, 0))

    base = rows[0][3]
    print(f"collector ingest on loopback: {args.posts} result posts per row ({args.posts - distinct} re-sent "
          f"duplicates), real agent report of {size} bytes, SQLite WAL synchronous=FULL, "
          f"{os.cpu_count()} CPUs shared by server and clients")
    header = f"{'':34} {'posts':>6} {'stored':>7} {'errors':>6} {'posts/s':>9} {'p50 ms':>8} {'p99 ms':>8} " \
             f"{'max ms':>8} {'vs 1 client':>12}"
    print(header)
    print("-" * len(header))
    for name, n, stored, rate, times, errors in rows:
        ms = [t * 1000 for t in times]
        print(f"{name:34} {n:6d} {stored:7d} {errors:6d} {rate:9.0f} {statistics.median(ms):8.2f} "
              f"{percentile(ms, 99):8.2f} {max(ms):8.2f} {rate / base:11.2f}x")


if __name__ == "__main__":
    main()
