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
