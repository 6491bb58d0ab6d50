"""``edgec-agent run``: the agent as a daemon of a fleet collector (``edgec serve``).

Loop: register the device with what was detected (profile, runtimes and their versions, power
sensor), long-poll for a job this device can run, download its files by sha256 and verify
them (a mismatch is refused, never run), run the benchmark in a child process (the agent's own
``bench``, so a crashing runtime cannot take the daemon down and a hung one can be stopped),
post the report, and heartbeat the lease while the job runs. When the collector is away the
agent retries with exponential backoff (with jitter) and registers again.

Nothing is lost on the agent's side either: a report is written to the spool directory before
it is posted and removed only once the collector has answered, so a report that could not be
delivered is sent again after a restart. Each report carries an id generated once per job
attempt, so a report posted twice is stored once.

Standard library only, Python 3.6 syntax, like the rest of the agent.
"""

import hashlib
import http.client as http_client
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error as urllib_error
import urllib.request as urllib_request
import uuid

from . import __version__, device, schema
from .errors import AgentError
from .vocab import NAME_PATTERN, RUNTIMES
from .vocab import parse_labels as _parse_labels

log = logging.getLogger(__name__)

API = "/v1"
NAME = re.compile(NAME_PATTERN)
FILE = re.compile(r"^(bundle/)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Bench options a job may set. An external power command is not one of them: a collector must not
# be able to run commands on the device; only the device's own --power-command is used.
OPTION_FLAGS = (("runs", "--runs"), ("min_seconds", "--min-seconds"), ("warmup", "--warmup"),
                ("threads", "--threads"), ("batch", "--batch"), ("power", "--power"),
                ("power_rail", "--power-rail"), ("idle_seconds", "--idle-seconds"), ("seed", "--seed"))
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
CHUNK = 1 << 16


class Unreachable(Exception):
    """The collector did not answer (refused, reset, timed out, 5xx): try again later."""


class AgentRefused(AgentError):
    """The collector refused the agent itself (token, schema version, another agent's name)."""


class Answer:
    def __init__(self, status, data):
        self.status = status
        self.data = data

    def json(self):
        try:
            return json.loads(self.data.decode("utf-8")) if self.data else None
        except ValueError:
            return None

    def detail(self):
        doc = self.json()
        if isinstance(doc, dict) and "detail" in doc:
            detail = doc["detail"]
            if isinstance(detail, list):
                return "; ".join("%s: %s" % (".".join(str(x) for x in d.get("loc", [])), d.get("msg"))
                                 for d in detail[:5] if isinstance(d, dict))
            return str(detail)
        return (self.data or b"").decode("utf-8", "replace")[:300]


class Api:
    """The collector's HTTP API with urllib (bearer token on every request)."""

    def __init__(self, url, token, timeout=30.0, cafile=None):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.context = None
        if cafile:
            import ssl

            self.context = ssl.create_default_context(cafile=cafile)

    def _open(self, method, path, body=None, timeout=None, accept="application/json"):
        headers = {"Authorization": "Bearer " + self.token, "Accept": accept,
                   "User-Agent": "edgec-agent/%s" % __version__}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = "application/json"
        request = urllib_request.Request(self.url + API + path, data=data, headers=headers, method=method)
        try:
            return urllib_request.urlopen(request, timeout=timeout or self.timeout, context=self.context)
        except urllib_error.HTTPError as exc:
            return exc
        except (urllib_error.URLError, socket.timeout, http_client.HTTPException, OSError) as exc:
            raise Unreachable("%s %s: %s" % (method, path, getattr(exc, "reason", None) or exc)) from exc

    def call(self, method, path, body=None, timeout=None):
        """One request -> :class:`Answer`; 401 raises :class:`AgentRefused`, 5xx/no answer :class:`Unreachable`."""
        response = self._open(method, path, body, timeout)
        try:
            status = response.getcode()
            data = response.read()
        except (socket.timeout, http_client.HTTPException, OSError) as exc:
            raise Unreachable("%s %s: reading the answer failed: %s" % (method, path, exc)) from exc
        finally:
            response.close()
        answer = Answer(status, data)
        if status == 401:
            raise AgentRefused("the collector at %s refused the token (401): %s" % (self.url, answer.detail()))
        if status >= 500:
            raise Unreachable("%s %s: %d %s" % (method, path, status, answer.detail()))
        return answer

    def download(self, sha256, dest, timeout=None):
        """Stream a file by sha256 into ``dest``; returns the sha256 of the bytes received."""
        response = self._open("GET", "/blobs/" + sha256, timeout=timeout, accept="application/octet-stream")
        digest = hashlib.sha256()
        try:
            status = response.getcode()
            if status == 401:
                raise AgentRefused("the collector at %s refused the token (401)" % self.url)
            if status != 200:
                answer = Answer(status, response.read())
                if status >= 500:
                    raise Unreachable("download of %s: %d %s" % (sha256, status, answer.detail()))
                raise AgentError("the collector has no file %s (%d %s)" % (sha256, status, answer.detail()))
            with open(dest, "wb") as fh:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    digest.update(chunk)
                    fh.write(chunk)
        except (socket.timeout, http_client.HTTPException, OSError) as exc:
            raise Unreachable("download of %s failed: %s" % (sha256, exc)) from exc
        finally:
            response.close()
        return digest.hexdigest()


class Backoff:
    """Exponential backoff with full jitter: 0.5 s doubling up to ``cap``."""

    def __init__(self, base=0.5, cap=30.0):
        self.base = base
        self.cap = cap
        self.failures = 0

    def next(self):
        delay = min(self.cap, self.base * (2 ** self.failures))
        self.failures += 1
        return random.uniform(delay / 2.0, delay)

    def reset(self):
        self.failures = 0


# ---------------------------------------------------------------------- what the device can run


def _distribution_version(*names):
    for name in names:
        try:
            if sys.version_info >= (3, 8):
                from importlib import metadata

                return metadata.version(name)
            import pkg_resources

            return pkg_resources.get_distribution(name).version
        except Exception:  # noqa: BLE001 - metadata absent or unreadable: version unknown
            continue
    return None


def _importable(module):
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def detect_runtimes():
    """Runtime name -> version (None when unknown) of the runtimes this Python can import.

    Found without importing them (``importlib.util.find_spec`` and package metadata), so it is
    fast and has no side effects on accelerators.
    """
    found = {}
    litert = _importable("ai_edge_litert")
    tflite = _importable("tflite_runtime")
    if litert:
        found["litert"] = _distribution_version("ai-edge-litert")
    if tflite:
        found["tflite"] = _distribution_version("tflite-runtime", "tflite_runtime")
        found.setdefault("litert", found["tflite"])
    if (litert or tflite) and _edgetpu_library():
        found["edgetpu"] = _distribution_version("pycoral")
    if _importable("onnxruntime"):
        found["onnxruntime"] = _distribution_version("onnxruntime", "onnxruntime-gpu")
    if _importable("tensorrt"):
        found["tensorrt"] = _distribution_version("tensorrt", "tensorrt-libs")
    return found


def _edgetpu_library():
    import ctypes.util
    import platform

    name = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}.get(platform.system())
    if not name:
        return None
    for directory in ("/usr/lib", "/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
                      "/usr/lib/arm-linux-gnueabihf", "/usr/local/lib"):
        if os.path.exists(os.path.join(directory, name)):
            return os.path.join(directory, name)
    return ctypes.util.find_library("edgetpu")


def guess_profile(info):
    """The edgec device profile id of a detected device, or None when it is not obvious."""
    model = (info.get("model") or "").lower()
    kind = info.get("kind")
    if kind == "jetson":
        for needle, profile in (("orin nano", "jetson-orin-nano"), ("agx orin", "jetson-agx-orin"),
                                ("xavier nx", "jetson-xavier-nx"), ("nano", "jetson-nano")):
            if needle in model:
                return profile
        return None
    if kind == "coral-devboard":
        return "coral-devboard"
    if kind == "rpi":
        for needle, profile in (("raspberry pi 5", "rpi5"), ("raspberry pi 4", "rpi4")):
            if needle in model:
                return profile
        return None
    if any(a.get("kind") == "edgetpu" and a.get("bus") == "usb" for a in info.get("accelerators") or []):
        return "coral-usb"
    if info.get("machine") in ("x86_64", "AMD64"):
        return "x86-cpu"
    return None


def parse_labels(text):
    """``k=v,k2=v2`` -> dict (:func:`edgec.agent.vocab.parse_labels`).

    Raises:
        AgentError: a malformed pair or key.
    """
    try:
        return _parse_labels(text)
    except ValueError as exc:
        raise AgentError(str(exc)) from None


def power_summary(root, command=None):
    """The power sensor this device would use (or why there is none)."""
    from . import sensors
    from .errors import Unavailable

    try:
        sensor = sensors.open_sensor("auto", root, command=command)
    except Unavailable as exc:
        return {"available": False, "reason": str(exc)}
    try:
        info = sensor.describe()
        return {"available": True, "sensor": info.get("sensor"), "scope": info.get("scope"),
                "rails": info.get("rails"), "total_rail": info.get("total_rail")}
    finally:
        sensor.close()


# ---------------------------------------------------------------------- the child that measures


def _package_location():
    """(package name, sys.path entry) of this agent: the zipapp or the installed edgec."""
    package = __name__.rsplit(".", 1)[0]
    here = os.path.dirname(os.path.abspath(__file__))
    depth = package.count(".") + 1
    entry = here
    for _ in range(depth):
        entry = os.path.dirname(entry)
    return package, entry


def _death_signal():
    """A function for the child (between fork and exec) that asks Linux to SIGKILL it when the
    daemon dies, so no orphan keeps measuring; None elsewhere. Resolved in the parent: the child
    must take no lock (imports, logging) while other threads exist."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigkill = 1, int(signal.SIGKILL)

    def preexec():
        prctl(pr_set_pdeathsig, sigkill)

    return preexec


class JobFailed(Exception):
    def __init__(self, message, retry):
        super().__init__(message)
        self.retry = retry


# ---------------------------------------------------------------------- the daemon


class Daemon:
    """One agent serving one collector.

    Args:
        api: :class:`Api` of the collector.
        name: this device's id at the collector.
        profile: its edgec profile id (None: only jobs addressed to ``name``).
        labels: dict of labels jobs may require.
        work_dir: job directories and the report spool.
        wait: seconds of one long poll.
        max_jobs: stop after this many jobs (None: run until stopped).
        power_command: the device's external power meter command (never taken from a job).
        root: device root (fixture trees in tests).
    """

    def __init__(self, api, name, profile=None, labels=None, work_dir=None, wait=20.0, max_jobs=None,
                 power_command=None, root="/", profile_source="given"):
        self.api = api
        self.name = name
        self.profile = profile
        self.profile_source = profile_source
        self.labels = labels or {}
        self.work_dir = os.path.abspath(work_dir)
        self.spool = os.path.join(self.work_dir, "spool")
        self.wait = wait
        self.max_jobs = max_jobs
        self.power_command = power_command
        self.root = root
        self.instance = uuid.uuid4().hex
        self.registered = False
        self.stopping = False
        self.done_jobs = 0
        self.backoff = Backoff()
        self._child = None
        self._idle = False
        self._lost = threading.Event()
        self._refused = None

    # ------------------------------------------------------------------ signals

    def _on_signal(self, signum, frame):
        self.stopping = True
        log.warning("signal %d: stopping%s", signum, " after reporting the current job" if self._child else "")
        child = self._child
        if child is not None and child.poll() is None:
            child.kill()
        if self._idle:
            raise _Stop()

    def install_signals(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    # ------------------------------------------------------------------ main loop

    def run(self):
        """Serve until stopped (SIGTERM/SIGINT) or ``max_jobs`` are done; returns the exit code."""
        for path in (self.work_dir, self.spool):
            if not os.path.isdir(path):
                os.makedirs(path)
        self.install_signals()
        self.description = self.describe()
        try:
            while not self.stopping:
                try:
                    self.flush_spool()
                    if not self.registered:
                        self.register()
                    job = self.poll()
                    self.backoff.reset()
                    if job is not None:
                        self.execute(job)
                        if self._refused:
                            raise AgentRefused("stopped: %s" % self._refused)
                        self.done_jobs += 1
                        if self.max_jobs is not None and self.done_jobs >= self.max_jobs:
                            log.info("%d job(s) done; stopping (--max-jobs)", self.done_jobs)
                            break
                except Unreachable as exc:
                    self.sleep_backoff(exc)
        except _Stop:
            pass
        log.info("agent stopped")
        return 0

    def sleep_backoff(self, exc):
        delay = self.backoff.next()
        log.warning("collector unreachable (%s); retrying in %.1f s", exc, delay)
        self.registered = False
        self._sleep(delay)

    def _sleep(self, seconds):
        self._idle = True
        try:
            deadline = time.time() + seconds
            while not self.stopping and time.time() < deadline:
                time.sleep(min(0.2, max(0.0, deadline - time.time())))
        finally:
            self._idle = False

    def describe(self):
        info = device.detect(self.root)
        return {"runtimes": detect_runtimes(), "power": power_summary(self.root, self.power_command),
                "detected": dict(info, profile_source=self.profile_source)}

    def register(self):
        body = {"device": self.name, "instance": self.instance, "profile": self.profile, "labels": self.labels,
                "runtimes": self.description["runtimes"], "power": self.description["power"],
                "detected": self.description["detected"], "agent_version": __version__,
                "schema_version": schema.SCHEMA_VERSION}
        answer = self.api.call("POST", "/devices/register", body)
        if answer.status != 200:
            raise AgentRefused("the collector refused to register '%s' (%d): %s" % (self.name, answer.status,
                                                                                 answer.detail()))
        self.registered = True
        runtimes = ", ".join("%s %s" % (k, v or "") for k, v in sorted(self.description["runtimes"].items()))
        log.info("registered as '%s' (profile %s; runtimes: %s) at %s", self.name, self.profile or "-",
                 runtimes or "none", self.api.url)

    def poll(self):
        """One long poll: the leased job, or None."""
        self._idle = True
        try:
            if self.stopping:
                raise _Stop()
            answer = self.api.call("POST", "/devices/%s/lease" % self.name,
                                   {"instance": self.instance, "wait": self.wait}, timeout=self.wait + 30)
        finally:
            self._idle = False
        if answer.status == 204:
            return None
        if answer.status == 404:
            self.registered = False  # the collector lost its record (new database): register again
            return None
        if answer.status == 409:
            raise AgentRefused("the collector refused '%s': %s" % (self.name, answer.detail()))
        if answer.status != 200:
            raise AgentRefused("unexpected answer to a lease request (%d): %s" % (answer.status, answer.detail()))
        return answer.json()

    # ------------------------------------------------------------------ one job

    def execute(self, job):
        job_id, lease_id = job["job_id"], job["lease_id"]
        log.info("job %d (attempt %d of %d): %s with %s", job_id, job["attempt"], job["max_attempts"],
                 job["target"], job["runtime"])
        self._lost.clear()
        beat = threading.Thread(target=self._heartbeat, args=(lease_id, float(job["heartbeat_s"])),
                                name="heartbeat", daemon=True)
        stop_beat = threading.Event()
        self._stop_beat = stop_beat
        beat.start()
        job_dir = tempfile.mkdtemp(prefix="job-%d-" % job_id, dir=self.work_dir)
        try:
            try:
                target = self.fetch(job, job_dir)
                report = self.measure(job, job_dir, target)
            except JobFailed as exc:
                log.error("job %d failed: %s", job_id, exc)
                self.report_failure(job, str(exc), exc.retry)
                return
            entry = {"uid": uuid.uuid4().hex, "job_id": job_id, "lease_id": lease_id, "device": self.name,
                     "instance": self.instance, "report": report}
            path = self.spool_write(entry)
        finally:
            stop_beat.set()
            shutil.rmtree(job_dir, ignore_errors=True)
        self.deliver(path, entry)

    def _heartbeat(self, lease_id, interval):
        while not self._stop_beat.wait(interval):
            try:
                answer = self.api.call("POST", "/devices/%s/heartbeat" % self.name,
                                       {"instance": self.instance, "leases": [lease_id]}, timeout=max(5.0, interval))
            except Unreachable as exc:
                log.warning("heartbeat failed: %s", exc)
                continue
            except AgentRefused as exc:  # 401: this device's credential was revoked
                self._take_back("the collector refused the heartbeat: %s" % exc)
                return
            doc = answer.json() or {}
            if answer.status == 200 and (doc.get("leases") or {}).get(lease_id) == "lost":
                self._take_back("the collector took the job back (lease lost: cancelled or expired)")
                return
            if answer.status == 404:  # the collector lost its record (a new database): register again
                self.registered = False
                self._take_back("the collector does not know this device any more (%s)" % answer.detail())
                return
            if answer.status in (403, 409):
                # another agent registered under this name: the lease is not this agent's any more,
                # so neither is the measurement, and this agent stops
                self._refused = "the collector refused the heartbeat (%d): %s" % (answer.status, answer.detail())
                self._take_back(self._refused)
                return

    def _take_back(self, why):
        log.warning("%s; stopping the measurement", why)
        self._lost.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.kill()

    def fetch(self, job, job_dir):
        """Download and verify the job's files; the path the benchmark runs."""
        files = job.get("files") or {}
        for name, sha in sorted(files.items()):
            if not FILE.match(name) or not SHA256.match(sha or ""):
                raise JobFailed("the job names a file '%s' (sha256 %r) this agent does not accept" % (name, sha),
                                retry=False)
            dest = os.path.join(job_dir, *name.split("/"))
            if not os.path.isdir(os.path.dirname(dest)):
                os.makedirs(os.path.dirname(dest))
            for attempt in (1, 2):
                got = self._download(sha, dest)
                if got == sha:
                    break
                log.warning("%s: received sha256 %s, expected %s (try %d of 2)", name, got, sha, attempt)
            else:
                os.remove(dest)
                raise JobFailed("refused to run %s: the downloaded bytes have sha256 %s, expected %s (the "
                                "collector's copy is corrupt or the transfer was altered)" % (name, got, sha),
                                retry=False)
        target = job.get("target")
        if target == "bundle":
            return os.path.join(job_dir, "bundle")
        if target not in files:
            raise JobFailed("the job's target %r is not among its files" % target, retry=False)
        return os.path.join(job_dir, target)

    def _download(self, sha, dest):
        backoff = Backoff()
        while True:
            try:
                return self.api.download(sha, dest, timeout=max(60.0, self.api.timeout))
            except Unreachable as exc:
                if self.stopping or self._lost.is_set():
                    raise JobFailed("download of %s interrupted: %s" % (sha[:12], exc), retry=True) from exc
                delay = backoff.next()
                log.warning("%s; retrying in %.1f s", exc, delay)
                time.sleep(delay)
            except AgentError as exc:
                raise JobFailed(str(exc), retry=True) from exc

    def bench_argv(self, job, target, out):
        package, _ = _package_location()
        runtime = job.get("runtime") or "auto"
        if runtime != "auto" and runtime not in RUNTIMES:
            raise JobFailed("unknown runtime %r" % runtime, retry=False)
        argv = [sys.executable, "-m", package, "bench", target, "--json", "--out", out, "--runtime", runtime]
        if job.get("target") != "bundle":
            argv += ["--expect-sha256", job["files"][job["target"]]]
        options = job.get("options") or {}
        for key, flag in OPTION_FLAGS:
            value = options.get(key)
            if value is not None:
                argv += [flag, str(value)]
        if self.power_command:
            argv += ["--power-command", self.power_command]
        if self.root != "/":
            argv += ["--root", self.root]
        return argv

    def measure(self, job, job_dir, target):
        """Run the agent's ``bench`` on ``target`` in a child process; its checked report."""
        out = os.path.join(job_dir, "report.json")
        argv = self.bench_argv(job, target, out)
        package, entry = _package_location()
        env = dict(os.environ)
        env["PYTHONPATH"] = entry + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        timeout = float(job.get("timeout_s") or 600)
        if self._lost.is_set():
            raise JobFailed("the job was taken back by the collector before the run", retry=True)
        log.info("measuring: %s", " ".join(argv[3:]))
        try:
            child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=job_dir, env=env,
                                     universal_newlines=True, preexec_fn=_death_signal())
        except OSError as exc:
            raise JobFailed("cannot start the benchmark: %s" % exc, retry=True) from exc
        self._child = child
        if self._lost.is_set() and child.poll() is None:  # taken back while the child was starting
            child.kill()
        deadline = time.time() + timeout
        try:
            while True:
                try:
                    _, stderr = child.communicate(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    if time.time() > deadline:
                        child.kill()
                        child.communicate()
                        raise JobFailed("the benchmark did not finish within %g s" % timeout, retry=False) from None
        finally:
            self._child = None
        if self._lost.is_set():
            raise JobFailed("the job was taken back by the collector during the run", retry=True)
        if self.stopping and child.returncode != 0:
            raise JobFailed("the agent was stopped during the run", retry=True)
        if child.returncode != 0:
            errors = [ln[len("Error: "):] for ln in (stderr or "").splitlines() if ln.startswith("Error: ")]
            tail = errors[-1] if errors else ((stderr or "").strip().splitlines() or ["no message"])[-1]
            if child.returncode < 0:
                raise JobFailed("the benchmark died with signal %d: %s" % (-child.returncode, tail), retry=True)
            raise JobFailed(tail, retry=child.returncode == EXIT_UNAVAILABLE)
        try:
            with open(out) as fh:
                report = json.load(fh)
            return schema.check(report)
        except (OSError, ValueError) as exc:
            raise JobFailed("the benchmark wrote no readable report: %s" % exc, retry=True) from exc
        except schema.SchemaError as exc:
            raise JobFailed(str(exc), retry=False) from exc

    # ------------------------------------------------------------------ delivery

    def spool_write(self, entry):
        path = os.path.join(self.spool, entry["uid"] + ".json")
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(entry, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, path)
        return path

    def deliver(self, path, entry):
        """Post a spooled report until the collector answers (then the spool entry goes)."""
        backoff = Backoff()
        while True:
            try:
                answer = self.api.call("POST", "/results", entry)
            except Unreachable as exc:
                if self.stopping:
                    log.warning("result of job %d kept in %s: it is sent on the next start", entry["job_id"], path)
                    raise _Stop() from exc
                delay = backoff.next()
                log.warning("posting the result of job %d failed (%s); retrying in %.1f s", entry["job_id"], exc,
                            delay)
                self._sleep(delay)
                continue
            if answer.status in (200, 201):
                doc = answer.json() or {}
                log.info("job %d: result %s stored%s", entry["job_id"], doc.get("result_id"),
                         " (it was already there)" if doc.get("duplicate") else "")
            else:
                log.error("job %d: the collector did not store the result (%d): %s", entry["job_id"], answer.status,
                          answer.detail())
            os.remove(path)
            return

    def flush_spool(self):
        for name in sorted(os.listdir(self.spool)):
            if not name.endswith(".json"):
                continue
            path = os.path.join(self.spool, name)
            try:
                with open(path) as fh:
                    entry = json.load(fh)
            except (OSError, ValueError) as exc:
                log.error("unreadable spooled result %s (%s); moved aside", path, exc)
                os.rename(path, path + ".bad")
                continue
            log.info("sending the spooled result of job %s", entry.get("job_id"))
            self.deliver(path, entry)

    def report_failure(self, job, error, retry):
        body = {"lease_id": job["lease_id"], "device": self.name, "error": error[:3900], "retry": bool(retry),
                "instance": self.instance}
        backoff = Backoff()
        for _ in range(8):
            try:
                answer = self.api.call("POST", "/jobs/%d/failure" % job["job_id"], body)
            except Unreachable as exc:
                if self.stopping:
                    return  # the lease expires and the job is re-queued
                delay = backoff.next()
                log.warning("reporting the failure failed (%s); retrying in %.1f s", exc, delay)
                self._sleep(delay)
                continue
            if answer.status != 200:
                log.warning("the collector did not record the failure (%d): %s", answer.status, answer.detail())
            return


class _Stop(BaseException):
    """Leaves the main loop at once (raised from the signal handler while idle)."""


def default_credential_file(name):
    """Where the agent keeps the credential of device ``name`` (``$EDGEC_AGENT_CONFIG``, else
    ``~/.config/edgec-agent``)."""
    root = os.environ.get("EDGEC_AGENT_CONFIG") or os.path.join(os.path.expanduser("~"), ".config", "edgec-agent")
    return os.path.join(root, name + ".credential")


def _read_secret(path, what):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError as exc:
        raise AgentError("cannot read %s %s: %s" % (what, path, exc)) from exc


def write_private(path, text):
    """Write ``text`` to ``path`` readable by this user only (0600, directory 0700), atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, path)


def enroll(api, name, path):
    """Trade the enrollment token ``api`` carries for this device's own credential, kept in ``path``.

    Raises:
        AgentError: the collector refused the token or cannot be reached.
    """
    try:
        answer = api.call("POST", "/enroll", {"device": name})
    except Unreachable as exc:
        raise AgentError("cannot reach the collector to enroll '%s': %s" % (name, exc)) from exc
    doc = answer.json() or {}
    if answer.status != 201 or not doc.get("credential"):
        raise AgentRefused("the collector refused to enroll '%s' (%d): %s" % (name, answer.status, answer.detail()))
    write_private(path, doc["credential"])
    log.info("enrolled as '%s': credential kept in %s (mode 0600)", name, path)
    return doc["credential"]


def main(args):
    """``run`` subcommand: parsed argparse namespace -> exit code."""
    token = args.token or os.environ.get("EDGEC_TOKEN", "").strip()
    if args.token_file:
        token = _read_secret(args.token_file, "--token-file")
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", args.server or ""):
        raise AgentError("--server %r: expected http://HOST:PORT (the URL 'edgec serve' prints)" % args.server)
    name = args.name or socket.gethostname().split(".")[0] or "device"
    if not NAME.match(name):
        raise AgentError("device name %r: expected 1-64 letters, digits, '.', '_' or '-' (pass --name)" % name)
    credential_file = args.credential_file or default_credential_file(name)
    enroll_token = args.enroll_token
    if args.enroll_token_file:
        enroll_token = _read_secret(args.enroll_token_file, "--enroll-token-file")
    if enroll_token and not token:
        if os.path.exists(credential_file):
            log.info("already enrolled: using the credential in %s", credential_file)
            token = _read_secret(credential_file, "credential file")
        else:
            token = enroll(Api(args.server, enroll_token, cafile=args.cafile), name, credential_file)
    elif not token and os.path.exists(credential_file):
        token = _read_secret(credential_file, "credential file")
    if not token:
        raise AgentError("no token: pass --enroll-token-file FILE (from 'edgec devices enroll %s'), --token-file "
                         "FILE (a copy of the collector's token file), --token TOKEN or set EDGEC_TOKEN" % name)
    labels = parse_labels(args.labels)
    profile, source = args.profile, "given"
    if not profile:
        profile, source = guess_profile(device.detect(args.root)), "detected"
        if profile is None:
            source = "none"
            log.warning("no device profile given or recognized: only jobs addressed to '%s' will come "
                        "(pass --profile ID)", name)
    elif not NAME.match(profile):
        raise AgentError("--profile %r: expected a profile id such as rpi5 or jetson-orin-nano" % profile)
    work_dir = args.work_dir or os.path.join(os.environ.get("EDGEC_AGENT_CACHE")
                                             or os.path.join(os.path.expanduser("~"), ".cache", "edgec-agent"),
                                             "run", name)
    api = Api(args.server, token, cafile=args.cafile)
    daemon = Daemon(api, name, profile=profile, labels=labels, work_dir=work_dir, wait=args.wait,
                    max_jobs=args.max_jobs, power_command=args.power_command, root=args.root, profile_source=source)
    return daemon.run()
