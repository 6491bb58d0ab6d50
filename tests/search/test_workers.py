"""Workers: two processes on one PostgreSQL study (one killed mid-trial: its trial is retried and
the study still ends with N trials, none run twice), and trials measured by a fleet agent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.cli import REPO
from tests.helpers.fleet import wait_for
from tests.helpers.search import PTQ_SPACE, request_for, write_space

optuna = pytest.importorskip("optuna")


def _foreground_ctrl_c() -> None:
    """In the child: SIGINT as in a terminal's foreground job (a shell starts background jobs, and
    with them CI runners' test processes, with SIGINT ignored, which the child would inherit)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _worker(data, space: Path, storage: str, out: Path, trials: int, *extra: str) -> subprocess.Popen:
    log = open(out.with_suffix(".log"), "w")
    return subprocess.Popen(
        [sys.executable, "-m", "edgec", "search", str(data["model"]), "--target", "x86-cpu", "--eval", str(data["eval"]),
         "--calib", str(data["calib"]), "--space", str(space), "--trials", str(trials), "--storage", storage,
         "--study", "pg", "--out", str(out), "--runs", "30", "--warmup", "2", "--min-repeats", "1", "--max-repeats",
         "1", "--heartbeat", "1", "--sampler", "random", "--json", *extra],
        stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO, env={**os.environ, "EDGEC_PROGRESS": "0"},
        preexec_fn=_foreground_ctrl_c)


def _starts(out: Path) -> list[int]:
    path = out / "journal.jsonl"
    if not path.is_file():
        return []
    return [e["trial"] for e in map(json.loads, path.read_text().splitlines()) if e["event"] == "start"]


@pytest.mark.slow
def test_two_workers_on_postgresql_and_one_killed_mid_trial(data, tmp_path, postgres_url):
    from edgec.search.study import open_storage, storage_url

    n = 6
    space = write_space(tmp_path / "space.toml", PTQ_SPACE)
    a = _worker(data, space, postgres_url, tmp_path / "a", n)
    b = _worker(data, space, postgres_url, tmp_path / "b", n)
    try:
        storage = open_storage(storage_url(postgres_url, tmp_path), heartbeat=None)

        def running_on_a():
            if a.poll() is not None:
                raise AssertionError(f"worker a ended early: {(tmp_path / 'a.log').read_text()[-2000:]}")
            try:
                study = optuna.load_study(study_name="pg", storage=storage)
            except KeyError:
                return None
            return next((t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING" and t.params
                         and t.user_attrs.get("worker", "").endswith(f":{a.pid}")), None)

        def state_of(number: int) -> str:
            study = optuna.load_study(study_name="pg", storage=storage)
            return next(t.state.name for t in study.get_trials(deepcopy=False) if t.number == number)

        while True:
            victim = wait_for(running_on_a, 300, "worker a to be building a trial", interval=0.05)
            # frozen first, then killed only if its trial is still running: on a fast machine a
            # short trial could otherwise end between the look and the kill
            a.send_signal(signal.SIGSTOP)
            if state_of(victim.number) == "RUNNING":
                break
            a.send_signal(signal.SIGCONT)
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=30)
        out, _ = b.communicate(timeout=600)
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert b.returncode == 0, (tmp_path / "b.log").read_text()[-3000:]
    summary = json.loads(out)
    assert summary["counts"]["finished"] == n
    study = optuna.load_study(study_name="pg", storage=storage)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    failed = [t for t in trials if t.state.name == "FAIL" and not t.user_attrs.get("surplus")]
    assert len(finished) == n
    assert [t.number for t in failed] == [victim.number]  # failed by its missing heartbeat
    retry = [t for t in finished if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].params == victim.params
    assert retry[0].user_attrs["worker"].endswith(f":{b.pid}")
    starts = _starts(tmp_path / "a") + _starts(tmp_path / "b")
    assert len(starts) == len(set(starts)), starts  # no trial was run twice
    assert set(t.number for t in finished) <= set(starts)
    assert {t.user_attrs["worker"].rsplit(":", 1)[1] for t in finished} <= {str(a.pid), str(b.pid)}


def test_trials_measured_by_a_fleet_agent(data, tmp_path, serve, agents):
    from edgec.search import api
    from edgec.search.device import Device

    server = serve()
    agents(server, "bench-1", "--profile", "x86-cpu")
    with server.client() as c:
        wait_for(lambda: any(d["id"] == "bench-1" for d in c.get("/v1/devices").json()["devices"]), 60,
                 "the agent to register")
    device = Device(device=None, server=server.url, token_file=server.token_file, runs=30, warmup=2, min_runs=2,
                    max_runs=2, timeout=120)
    space = PTQ_SPACE.replace('["int8", "fp32", "fp16", "dynamic"]', '["int8", "fp16"]')
    request = request_for(data, tmp_path, space, device, trials=2)
    from tests.helpers.search import enqueue

    enqueue(request, ["maximize", "minimize", "minimize"], [{"precision": "int8"}, {"precision": "fp16"}])
    doc = api.run(request)
    assert doc["settings"]["device"]["where"].startswith(f"fleet {server.url}")
    assert doc["settings"]["energy"]["available"] is False  # this machine's agent reads no power
    for t in doc["trials"]:
        lat = t["result"]["latency"]
        assert lat["devices"] == ["bench-1"] and [r["device"] for r in lat["runs"]] == ["bench-1", "bench-1"]
    assert all(b["latency"]["devices"] == ["bench-1"] for b in doc["baselines"])
    with server.client() as c:
        jobs = c.get("/v1/jobs", params={"limit": 100}).json()["jobs"]
    # fp32 + int8 baselines and the fp16 trial, two runs each (the int8 trial reuses the baseline's)
    assert len(jobs) == 6 and all(j["state"] == "done" for j in jobs)


@pytest.mark.slow
def test_worker_processes_share_one_study(data, tmp_path, quick_device):
    from edgec.search import api

    request = request_for(data, tmp_path, PTQ_SPACE, quick_device, trials=4, workers=2)
    doc = api.run(request)
    assert doc["counts"]["finished"] == 4 and doc["counts"].get("FAIL", 0) == 0
    workers = {t["worker"] for t in doc["trials"]}
    assert len(workers) == 2, workers  # this process and one spawned worker
    starts = _starts(request.out)
    assert sorted(starts) == sorted(set(starts))


FINE_TUNE_SPACE = """
[space]
precision = "int8"
prune_structure = "none"
prune = [0.3, 0.5, 0.7]
cluster = "none"
quantization = "ptq"
epochs = 3
lr = 0.002
distill = false
"""


@pytest.mark.slow
def test_an_interrupted_search_queues_its_trial_and_resumes(data, tmp_path):
    from edgec.search.study import open_storage, storage_url

    # trials that fine-tune for a few seconds: the interrupt lands inside one
    space = write_space(tmp_path / "space.toml", FINE_TUNE_SPACE)
    out = tmp_path / "out"
    out.mkdir()
    tune = ("--fine-tune", str(data["fine_tune"]), "--pruner", "none")
    proc = _worker(data, space, f"sqlite:///{out / 'search.db'}", out, 3, *tune)
    storage = None
    try:
        def building():
            nonlocal storage
            if proc.poll() is not None:
                raise AssertionError(f"the search ended early: {out.with_suffix('.log').read_text()[-2000:]}")
            if not (out / "search.db").is_file():
                return None
            storage = storage or open_storage(storage_url(None, out), heartbeat=None)
            try:
                study = optuna.load_study(study_name="pg", storage=storage)
            except KeyError:
                return None
            return next((t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING" and t.params), None)

        while True:
            victim = wait_for(building, 300, "a trial to be built", interval=0.05)
            time.sleep(0.5)
            # frozen, checked, then interrupted: a trial that ended in the half second is not the one
            proc.send_signal(signal.SIGSTOP)
            study = optuna.load_study(study_name="pg", storage=storage)
            if next(t.state.name for t in study.get_trials(deepcopy=False) if t.number == victim.number) == "RUNNING":
                break
            proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGCONT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out.with_suffix(".log").read_text()[-2000:]
    study = optuna.load_study(study_name="pg", storage=storage)
    queued = [t for t in study.get_trials(deepcopy=False) if t.state.name == "WAITING"]
    assert [t.user_attrs.get("interrupted_trial") for t in queued] == [victim.number]
    done_before = sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.get_trials(deepcopy=False))

    again = _worker(data, space, f"sqlite:///{out / 'search.db'}", out, 3, *tune)
    stdout, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out.with_suffix(".log").read_text()[-2000:]
    assert json.loads(stdout)["counts"]["finished"] == 3
    trials = optuna.load_study(study_name="pg", storage=storage).get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3 and done_before < 3
    resumed = [t for t in finished if t.user_attrs.get("interrupted_trial") == victim.number]
    assert len(resumed) == 1 and resumed[0].params == victim.params


@pytest.fixture
def foreground_ctrl_c():
    """SIGINT with Python's default handler, as in a terminal's foreground job, whatever the test
    process was started with (a background job ignores SIGINT)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_a_ctrl_c_is_kept_for_a_safe_moment_and_never_lost(foreground_ctrl_c):
    """Ctrl-C raises at once inside a trial's own work, waits for the next step while Optuna
    records a trial, and survives being dropped by Python in a finalizer ("Exception ignored in")."""
    from edgec.search.interrupts import checkpoint, immediate, interrupts_kept

    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, an exception it raised is dropped

    with interrupts_kept():
        os.kill(os.getpid(), signal.SIGINT)  # outside a trial's work: remembered, not raised
        with pytest.raises(KeyboardInterrupt):
            checkpoint()
    checkpoint()  # forgotten once the search is over
    with interrupts_kept():
        with pytest.raises(KeyboardInterrupt):
            with immediate():
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(100):  # the handler runs between two bytecodes
                    pass
    with interrupts_kept():
        with immediate():
            Finalized()
        with pytest.raises(KeyboardInterrupt):
            checkpoint()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job: Ctrl-C is not for it, nor for its search
    with interrupts_kept():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


_OPEN_AT = """
import sys, time
from edgec.search.study import open_storage
at = float(sys.argv[2])
time.sleep(max(0.0, at - time.time()))
open_storage(sys.argv[1], heartbeat=None)
"""


def test_processes_that_open_a_new_sqlite_storage_together_all_get_it(tmp_path):
    """Workers (or a worker and a reader) starting on a new SQLite file race to create its tables
    and stamp its schema version; every one of them opens it."""
    url = f"sqlite:///{tmp_path / 'search.db'}"
    at = time.time() + 8  # past every process's imports: they open the file in the same moment
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AT, url, str(at)], cwd=REPO, stderr=subprocess.PIPE,
                              text=True) for _ in range(6)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, "\n".join(e[-600:] for e in errors if e)
