"""Where the agent runs: this machine (``local``) or a device over the system ``ssh``/``scp``.

Both transports take the same path: a fresh working directory on the device, the zipapp and the
artifact files copied there, their sha256 checked on arrival with the device's own Python, the
agent run with that Python, its JSON report read from stdout, and the directory removed.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

from edgec.errors import EdgecError

log = logging.getLogger(__name__)

# Runs on the device (Python >= 3.6): a new working directory, printed on stdout.
MKDTEMP = ("import sys, tempfile\n"
           "assert sys.version_info >= (3, 6), 'Python %d.%d is older than 3.6' % sys.version_info[:2]\n"
           "print(tempfile.mkdtemp(prefix='edgec-agent-'))\n")
# Runs on the device: 'sha256 path' for each argument.
SHA256 = ("import hashlib, sys\n"
          "for p in sys.argv[1:]:\n"
          "    h = hashlib.sha256()\n"
          "    with open(p, 'rb') as f:\n"
          "        for c in iter(lambda: f.read(1 << 20), b''):\n"
          "            h.update(c)\n"
          "    print(h.hexdigest() + ' ' + p)\n")
# Runs on the device: remove the working directory (only one this module created).
CLEANUP = ("import os, shutil, sys\n"
           "p = sys.argv[1]\n"
           "if os.path.basename(p).startswith('edgec-agent-'):\n"
           "    shutil.rmtree(p, ignore_errors=True)\n")


class Transport:
    """A device the agent runs on."""

    name = ""
    python = "python3"

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        raise NotImplementedError

    def put(self, local: Path, remote: str, timeout: float) -> None:
        raise NotImplementedError

    def join(self, directory: str, name: str) -> str:
        return directory.rstrip("/") + "/" + name

    def python_code(self, code: str, *args: str, timeout: float = 60) -> str:
        """Run ``code`` with the device's Python; its stdout.

        Raises:
            EdgecError: the device's Python is missing or the code failed.
        """
        proc = self.run([self.python, "-c", code, *args], timeout)
        if proc.returncode != 0:
            raise EdgecError(self.explain(proc, f"running {self.python} on {self.name}"))
        return proc.stdout

    def explain(self, proc: subprocess.CompletedProcess, what: str) -> str:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()
        last = tail[-1] if tail else f"exit code {proc.returncode}"
        if proc.returncode == 127 or "No such file" in last and self.python in last:
            return (f"{what} failed: '{self.python}' not found on {self.name}; install Python >= 3.6 there "
                    f"or pass --python PATH")
        return f"{what} failed: {last}"


class Local(Transport):
    """This machine, through a Python interpreter here (the one running edgec by default)."""

    def __init__(self, python: str | None = None):
        self.python = python or sys.executable
        self.name = "local"

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]}: No such file or directory")
        except subprocess.TimeoutExpired as exc:
            raise EdgecError(f"'{shlex.join(argv[:3])} ...' did not finish within {timeout:g} s on {self.name}; "
                             f"raise --timeout") from exc

    def put(self, local: Path, remote: str, timeout: float) -> None:
        shutil.copyfile(local, remote)


class Ssh(Transport):
    """A device reached with the system ``ssh`` and ``scp`` (keys from the user's ssh setup)."""

    def __init__(self, url: str, python: str | None = None, identity: Path | None = None,
                 options: tuple[str, ...] | list[str] = ()):
        self.url = url
        self.user, self.host, self.port = parse_ssh_url(url)
        self.python = python or "python3"
        self.name = url
        for tool in ("ssh", "scp"):
            if shutil.which(tool) is None:
                raise EdgecError(f"--device {url} needs the '{tool}' command, which is not on PATH; "
                                 "install OpenSSH's client (e.g. apt-get install openssh-client)")
        common = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]
        if identity:
            common += ["-i", str(identity)]
        for opt in options:
            common += ["-o", opt]
        self._ssh = ["ssh", *common] + (["-p", str(self.port)] if self.port else [])
        self._scp = ["scp", "-q", *common] + (["-P", str(self.port)] if self.port else [])
        self._dest = f"{self.user}@{self.host}" if self.user else self.host

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        cmd = [*self._ssh, self._dest, "--", " ".join(shlex.quote(a) for a in argv)]
        log.debug("ssh: %s", shlex.join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise EdgecError(f"the command on {self.url} did not finish within {timeout:g} s; raise --timeout") from exc
        if proc.returncode == 255:
            raise EdgecError(f"cannot reach {self.url} over ssh: {_last_line(proc.stderr)}; check the host, port, "
                             "user and key (does 'ssh -p PORT USER@HOST' log in without a password?)")
        return proc

    def put(self, local: Path, remote: str, timeout: float) -> None:
        host = f"[{self.host}]" if ":" in self.host else self.host
        target = f"{self.user}@{host}:{remote}" if self.user else f"{host}:{remote}"
        try:
            proc = subprocess.run([*self._scp, str(local), target], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise EdgecError(f"copying {local.name} to {self.url} did not finish within {timeout:g} s") from exc
        if proc.returncode != 0:
            raise EdgecError(f"scp of {local.name} to {self.url} failed: {_last_line(proc.stderr)}")


def _last_line(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no error message"


def parse_ssh_url(url: str) -> tuple[str | None, str, int | None]:
    """``ssh://user@host[:port]`` -> (user, host, port).

    Raises:
        EdgecError: not an ssh:// URL, no host, or a bad port.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "ssh":
        raise EdgecError(f"device '{url}' is not 'local' or an ssh:// URL; expected local or ssh://user@host[:port]")
    try:
        port = parts.port
    except ValueError:
        raise EdgecError(f"device '{url}' has an invalid port; expected ssh://user@host[:port]") from None
    if not parts.hostname:
        raise EdgecError(f"device '{url}' has no host; expected ssh://user@host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.password:
        raise EdgecError(f"device '{url}': expected ssh://user@host[:port] with no path, query or password")
    return parts.username, parts.hostname, port


def transport_for(device: str, *, python: str | None = None, identity: Path | None = None,
                  ssh_options: tuple[str, ...] | list[str] = ()) -> Transport:
    """``local`` or ``ssh://user@host[:port]`` -> its transport."""
    if device == "local":
        return Local(python)
    if device.startswith("ssh://"):
        return Ssh(device, python, identity, ssh_options)
    raise EdgecError(f"unknown device '{device}'; expected local or ssh://user@host[:port]")


class Session:
    """A working directory on the device, removed on exit (also after an error)."""

    def __init__(self, transport: Transport, timeout: float):
        self.transport = transport
        self.timeout = timeout
        self.dir: str | None = None
        self._local_tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> Session:
        out = self.transport.python_code(MKDTEMP, timeout=60)
        lines = out.strip().splitlines()
        if not lines or not lines[-1].startswith("/"):
            raise EdgecError(f"unexpected answer from {self.transport.python} on {self.transport.name}: {out!r}")
        self.dir = lines[-1].strip()
        return self

    def __exit__(self, *exc) -> None:
        if self.dir:
            try:
                self.transport.python_code(CLEANUP, self.dir, timeout=60)
            except EdgecError as err:
                log.warning("could not remove %s on %s: %s", self.dir, self.transport.name, err)

    def path(self, name: str) -> str:
        return self.transport.join(self.dir, name)

    def upload(self, files: dict[str, Path], expected: dict[str, str]) -> None:
        """Copy ``files`` (remote name -> local path) and check each sha256 on the device.

        Raises:
            EdgecError: a file arrived with another sha256.
        """
        for name, local in files.items():
            if "/" in name:
                parent = name.rsplit("/", 1)[0]
                self.transport.python_code("import os, sys; os.makedirs(sys.argv[1], exist_ok=True)",
                                           self.path(parent), timeout=60)
            self.transport.put(local, self.path(name), self.timeout)
        out = self.transport.python_code(SHA256, *[self.path(n) for n in files], timeout=self.timeout)
        got = {}
        for line in out.strip().splitlines():
            digest, _, path = line.partition(" ")
            got[path] = digest
        for name in files:
            remote_digest = got.get(self.path(name))
            if remote_digest != expected[name]:
                raise EdgecError(f"{name} arrived on {self.transport.name} with sha256 {remote_digest} instead of "
                                 f"{expected[name]}; the copy is corrupt (disk full?)")
