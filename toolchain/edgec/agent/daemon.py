"""The agent as a daemon of a fleet collector (``edgec serve``), as ``edgec-agent run`` starts it.

Loop: register the device with what was detected (profile, runtimes and their versions, power
sensor), long-poll for a job this device can run, download its files by sha256 and verify
them (:mod:`.fetch`: a mismatch is refused, never run), run the benchmark in a child process (the
agent's own ``bench``, so a crashing runtime cannot take the daemon down and a hung one can be
stopped), post the report through the spool (:mod:`.spool`: written before it is posted, removed
once the collector has answered), and heartbeat the lease while the job runs. When the collector
is away the agent retries with exponential backoff (with jitter) and registers again.

Standard library only, Python 3.6 syntax, like the rest of the agent.
"""

import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from . import __version__, device, schema
from .api import AgentRefused, Backoff, Unreachable
from .capabilities import detect_runtimes, power_summary
from .errors import EXIT_UNAVAILABLE
from .fetch import JobFailed, fetch_job
from .spool import Spool
from .vocab import RUNTIMES

log = logging.getLogger(__name__)

NO_RUNTIME_EVERY = 600.0  # seconds between the errors of an agent that can run nothing
# Bench options a job may set. An external power command is not one of them: a collector must not
# be able to run commands on the device; only the device's own --power-command is used.
OPTION_FLAGS = (("runs", "--runs"), ("min_seconds", "--min-seconds"), ("warmup", "--warmup"),
                ("threads", "--threads"), ("batch", "--batch"), ("power", "--power"),
                ("power_rail", "--power-rail"), ("idle_seconds", "--idle-seconds"), ("seed", "--seed"))


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
        self.spool = Spool(os.path.join(self.work_dir, "spool"), api, lambda: self.stopping, self._sleep)
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
        self._no_runtime_said = None

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
        if not os.path.isdir(self.work_dir):
            os.makedirs(self.work_dir)
        self.spool.create()
        self.install_signals()
        self.description = self.describe()
        try:
            while not self.stopping:
                try:
                    if not self.spool.flush():
                        raise _Stop()
                    if not self.registered:
                        self.register()
                    job = self.poll()
                    self.backoff.reset()
                    self.say_no_runtime()
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
            deadline = time.monotonic() + seconds
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
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
        if not runtimes:
            self._no_runtime_said = None
            self.say_no_runtime()

    def say_no_runtime(self):
        """Without a runtime the agent can run no job: say so loudly, and again every
        ``NO_RUNTIME_EVERY`` seconds while it waits (jobs for it queue meanwhile)."""
        if self.description["runtimes"]:
            return
        now = time.monotonic()
        if self._no_runtime_said is not None and now - self._no_runtime_said < NO_RUNTIME_EVERY:
            return
        self._no_runtime_said = now
        log.error("this agent can run nothing: its Python (%s, %s) can import none of the runtimes "
                  "(ai_edge_litert or tflite_runtime for .tflite, onnxruntime for .onnx, tensorrt for engines), "
                  "so jobs for '%s' will wait; install one for this Python (pip install ai-edge-litert) or run "
                  "the agent with a Python that has one", sys.executable or "python",
                  platform.python_version(), self.name)

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
                target = fetch_job(self.api, job, job_dir, lambda: self.stopping or self._lost.is_set())
                report = self.measure(job, job_dir, target)
            except JobFailed as exc:
                log.error("job %d failed: %s", job_id, exc)
                self.report_failure(job, str(exc), exc.retry)
                return
            entry = {"uid": uuid.uuid4().hex, "job_id": job_id, "lease_id": lease_id, "device": self.name,
                     "instance": self.instance, "report": report}
            path = self.spool.write(entry)
        finally:
            stop_beat.set()
            shutil.rmtree(job_dir, ignore_errors=True)
        if not self.spool.deliver(path, entry):
            raise _Stop()

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
        if (self._lost.is_set() or self.stopping) and child.poll() is None:
            child.kill()  # taken back, or the agent told to stop, while the child was starting
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    _, stderr = child.communicate(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() > deadline:
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

    # ------------------------------------------------------------------ failures

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
