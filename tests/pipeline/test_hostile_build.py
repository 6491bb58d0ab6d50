"""Builds that never crash and never mislead: a native crash, a signal, a full or read-only disk
and a second build into the same folder each end in one line, the right exit code and no
leftovers in --out or the temporary folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.cli import assert_one_line_error, run_cli

DATA = '''
import os
import signal
import time
from pathlib import Path

import numpy as np

def segv():
    os.kill(os.getpid(), signal.SIGSEGV)
    yield np.zeros((1, 8, 8, 1), np.float32)

def sigkill():
    os.kill(os.getpid(), signal.SIGKILL)
    yield np.zeros((1, 8, 8, 1), np.float32)

def slow():
    Path(os.environ["EDGEC_TEST_MARK"]).write_text(str(os.getpid()))
    for _ in range(1200):
        time.sleep(0.1)
        yield np.zeros((1, 8, 8, 1), np.float32)
'''


def strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def data_fns(tmp_path) -> Path:
    path = tmp_path / "hostile_data.py"
    path.write_text(DATA)
    return path


@pytest.fixture
def private_tmp(tmp_path) -> dict[str, str]:
    """A temporary folder of the build's own, to see what it leaves there."""
    tmp = tmp_path / "systmp"
    tmp.mkdir()
    return {"TMPDIR": str(tmp)}


def assert_no_leftovers(out: Path, env: dict[str, str]) -> None:
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())
    assert not out.exists(), "the --out root the build created is removed"
    assert not any(Path(env["TMPDIR"]).iterdir()), sorted(os.listdir(env["TMPDIR"]))


@pytest.mark.slow
@pytest.mark.parametrize("fn, name", [("segv", "SIGSEGV"), ("sigkill", "SIGKILL")])
def test_native_crash_is_one_line_exit_3(fn, name, digits_model_path, data_fns, tmp_path, private_tmp):
    out = tmp_path / "dist"
    proc = run_cli("build", digits_model_path, "-t", "rpi5", "--calib", f"{data_fns}:{fn}", "-o", out,
                   env=private_tmp)
    assert_one_line_error(proc, 3, f"the build process died ({name})", "step 'load data: calibration'",
                          "partial build was removed")
    assert_no_leftovers(out, private_tmp)
@pytest.mark.slow
def test_native_crash_in_analyze_is_one_line_exit_3(digits_model_path, data_fns, private_tmp):
    proc = run_cli("analyze", digits_model_path, "-t", "rpi5", "--calib", f"{data_fns}:segv", env=private_tmp)
    assert_one_line_error(proc, 3, "the analysis process died (SIGSEGV)", "step 'load data: calibration'")
    assert not any(Path(private_tmp["TMPDIR"]).iterdir())


def _default_signals() -> None:
    # as from a terminal: a suite run under nohup or as a background job inherits SIGHUP or SIGINT
    # ignored, and edgec rightly keeps an ignored signal ignored
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def _start_slow_build(model, data_fns, out: Path, mark: Path, env: dict[str, str]) -> subprocess.Popen:
    full = {**os.environ, "EDGEC_PROGRESS": "0", "EDGEC_TEST_MARK": str(mark), **env}
    proc = subprocess.Popen([sys.executable, "-m", "edgec", "build", str(model), "-t", "rpi5", "--calib",
                             f"{data_fns}:slow", "-o", str(out)], env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_default_signals)
    deadline = time.monotonic() + 120
    while not mark.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the build never reached its data"
        time.sleep(0.1)
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signals_clean_up_and_exit_128_plus_signal(signum, digits_model_path, data_fns, tmp_path, private_tmp):
    out = tmp_path / "dist"
    proc = _start_slow_build(digits_model_path, data_fns, out, tmp_path / "mark", private_tmp)
    assert (out / ".rpi5.lock").exists(), "the output folder is locked while the build runs"
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    name = signal.Signals(signum).name
    assert [ln for ln in err.splitlines() if ln.startswith("Error:")] == \
        [f"Error: interrupted ({name}); partial outputs removed"], err
    assert "Traceback" not in err
    assert_no_leftovers(out, private_tmp)
@pytest.mark.slow
def test_second_build_into_the_same_folder_fails_at_once(digits_model_path, digits_dir, data_fns, tmp_path,
                                                         private_tmp):
    out = tmp_path / "dist"
    first = _start_slow_build(digits_model_path, data_fns, out, tmp_path / "mark", private_tmp)
    try:
        second = run_cli("build", digits_model_path, "-t", "rpi5", "--calib", digits_dir / "calib.npz", "-o", out)
        line = assert_one_line_error(second, 2, "another edgec build (pid ", "is writing", "rpi5")
        assert f"pid {first.pid}," not in line or "started" in line
        # another profile into the same --out is another folder, and not locked
        other = run_cli("build", digits_model_path, "-t", "x86-cpu", "-p", "fp32", "-o", out)
        assert other.returncode == 0, other.stderr
    finally:
        os.kill(first.pid, signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM
    assert sorted(p.name for p in out.iterdir()) == ["x86-cpu"]
@pytest.mark.slow
def test_nan_data_and_strict_json(digits_model_path, digits_dir, tmp_path, private_tmp):
    """NaN in eval data is refused where it enters (never a silent PASS); a good build's --json and
    every JSON file it writes parse with a strict parser."""
    x = np.load(digits_dir / "eval.npz")["x"].copy()
    y = np.load(digits_dir / "eval.npz")["y"]
    x[5, 3, 2, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=y)
    proc = run_cli("build", digits_model_path, "-t", "x86-cpu", "-p", "fp32", "--eval", tmp_path / "nan.npz",
                   "--max-accuracy-drop", "1", "-o", tmp_path / "bad", env=private_tmp)
    assert_one_line_error(proc, 2, "nan.npz", "holds nan at sample 5, position (3, 2, 0)")
    assert "PASS" not in proc.stdout
    assert_no_leftovers(tmp_path / "bad", private_tmp)

    proc = run_cli("build", digits_model_path, "-t", "x86-cpu", "-p", "fp32", "--eval", digits_dir / "eval.npz",
                   "--max-accuracy-drop", "1", "--json", "-o", tmp_path / "good", env=private_tmp)
    assert proc.returncode == 0, proc.stderr
    assert strict_loads(proc.stdout)["checks"][0]["passed"] is True
    written = list((tmp_path / "good").rglob("*.json"))
    assert written
    for path in written:
        strict_loads(path.read_text())
    assert not any(Path(private_tmp["TMPDIR"]).iterdir())


def test_manifest_and_reports_write_null_for_nan(tmp_path, caplog):
    from edgec import manifest
    from edgec.ci.reports import to_json as ci_json
    from edgec.report import to_json as report_json
    from edgec.util import dumps_json

    doc = manifest.new(verification={"sqnr_db": float("nan"), "max_abs_diff": np.float32("inf")}, warnings=[])
    manifest.write(tmp_path, doc)
    back = strict_loads((tmp_path / "manifest.json").read_text())
    assert back["verification"] == {"sqnr_db": None, "max_abs_diff": None}
    assert "verification.sqnr_db" in back["warnings"][-1]
    assert manifest.read(tmp_path)["verification"]["sqnr_db"] is None
    (tmp_path / "bare.json").write_text('{"a": NaN}')
    with pytest.raises(Exception, match="NaN"):
        manifest.read(tmp_path / "bare.json")
    for text in (ci_json({"rows": [{"drop": float("nan")}]}), report_json([{"latency": float("-inf")}]),
                 dumps_json({"a": [np.nan]})):
        strict_loads(text)
    assert any("non-finite" in r.getMessage() for r in caplog.records)


@pytest.fixture
def tiny_mount(tmp_path):
    """Mount a tmpfs (root only): a small one fills up, a read-only one refuses writes."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mounts = []

    def mount(options: str) -> Path:
        point = tmp_path / f"mnt{len(mounts)}"
        point.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], check=False)
@pytest.mark.slow
def test_full_and_read_only_disks_name_the_path(digits_model_path, tiny_mount, private_tmp):
    full = tiny_mount("size=48k")
    proc = run_cli("build", digits_model_path, "-t", "x86-cpu", "-p", "fp32", "-o", full / "dist", env=private_tmp)
    line = assert_one_line_error(proc, 2, "No space left on device", str(full / "dist"))
    assert line
    assert not any(full.iterdir()), sorted(os.listdir(full))
    assert not any(Path(private_tmp["TMPDIR"]).iterdir())
    # the system temp folder full: TensorFlow's SavedModel cannot be written there
    proc = run_cli("build", digits_model_path, "-t", "x86-cpu", "-p", "fp32", "-o", private_tmp["TMPDIR"] + "/d",
                   env={"TMPDIR": str(full)})
    assert_one_line_error(proc, 2, "No space left on device", str(full))
    assert not any(full.iterdir()) and not any(Path(private_tmp["TMPDIR"]).iterdir())
    read_only = tiny_mount("ro,size=1m")
    proc = run_cli("build", digits_model_path, "-t", "x86-cpu", "-p", "fp32", "-o", read_only / "dist")
    assert_one_line_error(proc, 2, str(read_only / "dist"), "read-only file system")


def test_atomic_dir_replaces_in_one_rename_and_locks(tmp_path):
    from edgec.errors import EdgecError
    from edgec.util import atomic_dir, lock_path, output_lock

    final = tmp_path / "out" / "p"
    for version in ("one", "two"):
        with atomic_dir(final) as work:
            (work / "v").write_text(version)
            assert lock_path(final).exists()
    assert (final / "v").read_text() == "two"
    assert sorted(p.name for p in final.parent.iterdir()) == ["p"], "no lock file, no temp or old folder left"
    other = ("import logging, sys; from edgec.util import output_lock; logging.basicConfig()\n"
             "with output_lock(sys.argv[1], wait=sys.argv[2] == 'wait'): print('locked')")
    with output_lock(final), output_lock(final):  # re-entrant in one process
        at_once = subprocess.run([sys.executable, "-c", other, str(final), "fail"], capture_output=True, text=True)
        assert at_once.returncode != 0 and f"another edgec build (pid {os.getpid()}, started " in at_once.stderr
        waiting = subprocess.Popen([sys.executable, "-c", other, str(final), "wait"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert waiting.poll() is None, waiting.communicate()
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0 and out.strip() == "locked"
    assert f"waiting for another edgec build (pid {os.getpid()}" in err
    with pytest.raises(EdgecError, match="cannot write|not writable|cannot create"):
        with atomic_dir(Path("/proc/edgec-test/p")):
            pass
    gone = tmp_path / "new" / "deeper" / "p"
    with pytest.raises(RuntimeError), atomic_dir(gone):
        raise RuntimeError("failed build")
    assert not (tmp_path / "new").exists(), "the folders a failed build created are removed"
