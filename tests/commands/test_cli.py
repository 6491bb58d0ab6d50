"""The CLI stays light: no TensorFlow for --help, one-line errors, lazy subcommands."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from edgec.cli import COMMANDS
from tests.helpers.cli import REPO, run_cli


def test_help_imports_no_tensorflow():
    code = textwrap.dedent(f"""
        import sys
        from edgec.cli import cli
        for args in [["--help"]] + [[name, "--help"] for name in {sorted(COMMANDS)!r}]:
            try:
                cli.main(args, prog_name="edgec", standalone_mode=False)
            except SystemExit:
                pass
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in
                       ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "tf2onnx", "onnxruntime"))
        print("HEAVY", heavy)
        assert not heavy, heavy
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "HEAVY []" in proc.stdout
    for name in COMMANDS:
        assert name in proc.stdout


def test_sets_legacy_keras_before_tensorflow():
    code = "import os; os.environ['TF_USE_LEGACY_KERAS']='0'; import edgec; print(os.environ['TF_USE_LEGACY_KERAS'])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "1"


def test_targets_lists_every_required_profile(cli_runner):
    code, out, _ = cli_runner("targets", "--json")
    assert code == 0
    data = {p["id"]: p for p in json.loads(out)}
    for pid in ("x86-cpu", "rpi4", "rpi5", "jetson-nano", "jetson-xavier-nx", "jetson-orin-nano",
                "jetson-agx-orin", "coral-usb", "coral-devboard"):
        assert pid in data, pid
        assert data[pid]["precisions"] and data[pid]["runtime"] and data[pid]["device"]
    assert data["rpi5"]["default_precision"] == "int8"
    assert "int8" not in data["jetson-nano"]["precisions"]
    code, out, _ = cli_runner("targets")
    assert code == 0 and "jetson-orin-nano" in out and "rpi5" in out


def test_unknown_command_is_usage_error():
    proc = run_cli("frobnicate")
    assert proc.returncode == 2
    assert "No such command" in proc.stderr


_HELD_CTRL_C = """
import os, signal, subprocess, sys, time
import click
from edgec import cli

@click.command()
def stop():
    # Ctrl-C held down: SIGINT after SIGINT until the process is gone, so some land while it
    # winds down (exit handlers, finalization)
    subprocess.Popen(["sh", "-c", f"while kill -INT {os.getpid()} 2>/dev/null; do sleep 0.001; done"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(30)

cli.cli.add_command(stop)
sys.argv = ["edgec", "stop"]
cli.main()
"""


def test_a_ctrl_c_held_down_still_ends_in_one_error_line_and_exit_130():
    """Once the first Ctrl-C is handled, the further ones are ignored: none raises into the cleanup
    or turns exit code 130 into a death by SIGINT (Python resets a Python-level handler to the
    default action, death, during finalization)."""
    import signal

    codes, errs = [], []
    for _ in range(4):
        proc = subprocess.run([sys.executable, "-c", _HELD_CTRL_C], capture_output=True, text=True, cwd=REPO,
                              timeout=60, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        codes.append(proc.returncode)
        errs.append(proc.stderr)
    assert codes == [130] * 4, errs
    assert all(err.strip().splitlines() == ["Error: interrupted"] for err in errs), errs
