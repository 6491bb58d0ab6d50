"""The fleet's fixtures and helpers, shared by the collector, dashboard and search tests (a pytest
plugin, loaded by tests/conftest.py): a real `edgec serve` subprocess on a free loopback port,
real agent processes (`python edgec-agent.pyz run`), fp32 + int8 digits builds made with
`edgec build`, a real agent report to post, TLS files, and the HTTP calls an agent makes."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers.cli import REPO, run_cli


@pytest.fixture
def fleet_home(tmp_path, monkeypatch):
    """Results, agent caches and default token files stay in the test's tmp dir (the collector,
    dashboard and search folders use it for every test)."""
    monkeypatch.setenv("EDGEC_RESULTS_DB", str(tmp_path / "results.db"))
    monkeypatch.setenv("EDGEC_AGENT_CACHE", str(tmp_path / "agent-cache"))
    monkeypatch.setenv("EDGEC_AGENT_CONFIG", str(tmp_path / "agent-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.delenv("EDGEC_TOKEN", raising=False)


@pytest.fixture(scope="session")
def builds(digits_builds) -> dict[str, Path]:
    """fp32 and int8 x86-cpu builds of the digits CNN (the suite's shared ones, see tests/conftest.py)."""
    return digits_builds


@pytest.fixture(scope="session")
def int8_report(builds, agent_pyz, tmp_path_factory) -> dict:
    """A real report of the int8 artifact, written by the agent zipapp's bench."""
    out = tmp_path_factory.mktemp("report") / "report.json"
    proc = subprocess.run([sys.executable, str(agent_pyz), "bench", str(builds["int8"] / "model.tflite"),
                           "--runs", "30", "--warmup", "2", "--power", "none", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


class Server:
    """`edgec serve` in a subprocess on a free port of 127.0.0.1, with its own database (an SQLite
    file in ``directory``, or ``db``: a PostgreSQL URL, with the token file and blobs in ``directory``).
    ``verify``: what clients verify an HTTPS server against (an ``ssl.SSLContext``)."""

    def __init__(self, directory: Path, *args: str, db: str | None = None, verify=True, preexec_fn=None,
                 env: dict[str, str] | None = None):
        self.dir = Path(directory)
        self.db = db or self.dir / "collector.db"
        self.args = list(args) + (["--token-file", str(self.dir / "token"), "--blobs", str(self.dir / "blobs")]
                                  if db else [])
        self.verify = verify
        self.preexec_fn = preexec_fn
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.log = self.dir / "serve.log"
        self.first_output = ""

    @property
    def token_file(self) -> Path:
        return self.dir / "token"

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def start(self, port: int = 0, timeout: float = 60) -> Server:
        self.dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "EDGEC_PROGRESS": "0", **self.env}
        self._stderr = open(self.log, "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "edgec", "serve", "--port", str(port), "--db",
                                      str(self.db), *self.args], stdout=subprocess.PIPE, stderr=self._stderr,
                                     text=True, cwd=REPO, env=env, preexec_fn=self.preexec_fn)
        deadline = time.time() + timeout
        lines: queue.Queue = queue.Queue()
        # A thread drains stdout (a Python-level buffer would hide lines from select()).
        threading.Thread(target=lambda out: [lines.put(ln) for ln in out] + [lines.put("")],
                         args=(self.proc.stdout,), daemon=True).start()
        got = []
        while time.time() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if not line:
                break
            got.append(line)
            if line.startswith("token"):
                break
        self.first_output = "".join(got)
        if not got or " on http" not in got[0]:
            self.stop()
            raise AssertionError(f"edgec serve did not start: {self.first_output!r} {self.log.read_text()[-2000:]}")
        self.url = got[0].split(" on ", 1)[1].split()[0]
        try:
            self.wait_ready(deadline - time.time())
        except AssertionError:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/v1/health", headers=self.auth, timeout=2,
                             verify=self.verify).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.url} did not answer: {self.log.read_text()[-2000:]}")

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self, **kwargs):
        import httpx

        return httpx.Client(base_url=self.url, headers=self.auth, timeout=30, verify=self.verify, **kwargs)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, as when the machine loses power."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_stderr", None):
            self._stderr.close()

    def cli(self, *args: str, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
        """`edgec ARGS` with this server's token in EDGEC_TOKEN."""
        return run_cli(*args, env={"EDGEC_TOKEN": self.token, **env}, timeout=timeout)


class Agent:
    """`python edgec-agent.pyz run` in a subprocess, logging to a file."""

    def __init__(self, pyz: Path, server: Server, name: str, directory: Path, *args: str, auth: bool = True):
        self.name = name
        self.log = Path(directory) / f"agent-{name}.log"
        self.work_dir = Path(directory) / f"work-{name}"
        self._log = open(self.log, "a")
        token = ["--token-file", str(server.token_file)] if auth else []  # auth=False: the args say how
        self.proc = subprocess.Popen(
            [sys.executable, str(pyz), "run", "--server", server.url, *token,
             "--name", name, "--work-dir", str(self.work_dir), "--wait", "2", *args],
            stdout=self._log, stderr=subprocess.STDOUT, text=True, cwd=directory)

    def text(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def serve(tmp_path):
    """Start collectors (`serve(*args)`); each is stopped at the end of the test."""
    started: list[Server] = []

    def start(*args: str, directory: Path | None = None, **options) -> Server:
        server = Server(directory or tmp_path / f"server{len(started)}", *args, **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def agents(agent_pyz, tmp_path):
    """Start agents (`agents(server, name, *args)`); each is stopped at the end of the test."""
    started: list[Agent] = []

    def start(server: Server, name: str, *args: str, auth: bool = True) -> Agent:
        agent = Agent(agent_pyz, server, name, tmp_path, *args, auth=auth)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def upload_and_queue(client, build_dir: Path, count: int = 1, **fields) -> list[dict]:
    """Upload a build's model and queue ``count`` jobs for it over HTTP (what `edgec profile --server` sends)."""
    from edgec.util import sha256_file

    manifest = json.loads((build_dir / "manifest.json").read_text())
    record = manifest["artifacts"][0]
    data = (build_dir / record["file"]).read_bytes()
    sha = sha256_file(build_dir / record["file"])
    assert client.put(f"/v1/blobs/{sha}", content=data).status_code in (200, 201)
    body = {"files": {record["file"]: sha}, "target": record["file"], "runtime": "litert", "artifact": record,
            "manifest": manifest, "profile": "x86-cpu", **fields}
    jobs = []
    for _ in range(count):
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        jobs.append(r.json())
    return jobs


def register_device(client, name: str, runtimes: dict | None = None) -> str:
    """Register device ``name`` as a fresh agent instance (an x86-cpu with LiteRT); its instance id."""
    instance = uuid.uuid4().hex
    r = client.post("/v1/devices/register", json={"device": name, "instance": instance, "profile": "x86-cpu",
                                                  "runtimes": runtimes or {"litert": "2.3.0"}, "schema_version": 1})
    assert r.status_code == 200, r.text
    return instance


def get_job(server, job_id):
    """The collector's record of one job."""
    with server.client() as c:
        return c.get(f"/v1/jobs/{job_id}").json()


def processes_with(text: str) -> list[int]:
    """Pids whose command line mentions ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def register_agent(client, name, profile="x86-cpu", labels=None, runtimes=None):
    """Register device ``name`` (a fresh agent instance) with its profile, labels and runtimes;
    its instance id."""
    instance = uuid.uuid4().hex
    r = client.post("/v1/devices/register", json={"device": name, "instance": instance, "profile": profile,
                                                  "labels": labels or {}, "runtimes": runtimes or {"litert": "2.3.0"},
                                                  "schema_version": 1})
    assert r.status_code == 200, r.text
    return instance


def lease_job(client, name, instance, wait=0):
    """Lease a job for device ``name`` as its agent does (None when there is none)."""
    r = client.post(f"/v1/devices/{name}/lease", json={"instance": instance, "wait": wait})
    assert r.status_code in (200, 204), r.text
    return {**r.json(), "instance": instance} if r.status_code == 200 else None


def post_result(client, lease, report, name, uid=None):
    """Post an agent's report for a leased job."""
    return client.post("/v1/results", json={"uid": uid or uuid.uuid4().hex, "job_id": lease["job_id"],
                                            "lease_id": lease["lease_id"], "device": name,
                                            "instance": lease["instance"], "report": report})


def openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=cwd, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def tls_files(tmp_path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it, plus an unrelated CA (openssl CLI)."""
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is not installed")
    d = tmp_path / "tls"
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for name in ("ca", "other-ca"):
        openssl("req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj",
                 f"/CN=edgec test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
                               "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                               "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    return {name: d / f"{name}.{ext}" for name, ext in (("ca", "pem"), ("other-ca", "pem"), ("server", "pem"),
                                                          ("key", "key"))} | {"key": d / "server.key"}


#: a sitecustomize that shifts the clock of the Python processes started with it on PYTHONPATH
SHIFTED = Path(__file__).resolve().parents[1] / "collector" / "shifted_clock"
