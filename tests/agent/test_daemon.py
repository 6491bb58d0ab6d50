"""The fleet daemon's measuring child and the stop signal."""

from __future__ import annotations

import sys

import pytest

from edgec.agent.daemon import Daemon
from edgec.agent.fetch import JobFailed


def test_a_stop_that_comes_while_the_child_starts_ends_the_child(tmp_path, monkeypatch):
    """SIGTERM between the 'measuring' line and the child's start must not wait out the run: the
    child is killed as soon as it exists and the job goes back to the collector (retry)."""
    daemon = Daemon(api=None, name="polite", work_dir=str(tmp_path / "work"))
    # a run that would take 60 s; the signal handler already ran (the child did not exist yet)
    monkeypatch.setattr(daemon, "bench_argv", lambda job, target, out: [
        sys.executable, "-c", "import time; time.sleep(60)"])
    daemon.stopping = True
    with pytest.raises(JobFailed) as info:
        daemon.measure({"timeout_s": 120}, str(tmp_path), "model.tflite")
    assert "the agent was stopped during the run" in str(info.value)
    assert info.value.retry
