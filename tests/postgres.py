"""A real PostgreSQL server for tests: a throwaway cluster in a temporary directory.

The cluster is made with the installed server's own ``initdb`` and started with ``pg_ctl`` on a
free loopback port (and a unix socket in its directory), owned by a non-root user: PostgreSQL
refuses to run as root, so under root the ``postgres`` system user runs it (``runuser``). It
trusts local connections only (nothing else can reach a loopback port of a test machine) and is
stopped and removed at the end of the session. Each test takes a fresh database from it.

Where the binaries, a non-root user or psycopg are missing, the fixture skips with the reason.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest


def find_bindir() -> Path | None:
    """The directory of ``initdb``/``pg_ctl``/``postgres`` (PATH, else the Debian layout, newest first)."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if os.access(Path(candidate) / "pg_ctl", os.X_OK) and os.access(Path(candidate) / "initdb", os.X_OK):
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One throwaway cluster (see the module's docstring)."""

    def __init__(self, bindir: Path, user: str | None):
        self.bindir = bindir
        self.user = user  # run the server as this user (when the tests run as root)
        self.root = Path(tempfile.mkdtemp(prefix="edgec-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = _free_port()
        self.superuser = "edgec"

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)

    def start(self) -> PostgresServer:
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        os.chmod(self.root, 0o700)
        init = self._run("initdb", "-D", str(self.data), "-U", self.superuser, "--auth=trust", "-E", "UTF8",
                         "--no-locale")
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip()[-500:]}")
        return self.launch()

    def launch(self) -> PostgresServer:
        """Start the server on the cluster made by :meth:`start` (again after :meth:`halt`)."""
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200 "
                   "-c shared_buffers=32MB")
        started = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
                            "start")
        if started.returncode != 0:
            log = self.log.read_text()[-1000:] if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()[-500:]} {log}")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def halt(self) -> None:
        """Stop the server, keep the cluster (``launch`` starts it again)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)

    def stop(self) -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def server_user() -> tuple[str | None, str | None]:
    """(user to run the server as, or None for this one; why it cannot run, or None)."""
    if os.geteuid() != 0:
        return None, None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None, "PostgreSQL refuses to run as root and there is no 'postgres' user to run it"
    if not shutil.which("runuser"):
        return None, "PostgreSQL refuses to run as root and 'runuser' is missing"
    return "postgres", None


@pytest.fixture(scope="session")
def postgres_server():
    """A running throwaway PostgreSQL cluster for the session (skips with the reason when it cannot run)."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'edgec[postgresql]')")
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: install the 'postgresql' package")
    user, problem = server_user()
    if problem:
        pytest.skip(problem)
    server = PostgresServer(bindir, user)
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        server.stop()
        pytest.skip(f"cannot start a PostgreSQL cluster here: {exc}")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL of a fresh, empty database on the session's cluster."""
    return postgres_server.create_database()
