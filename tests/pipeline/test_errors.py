"""Every listed bad input: one 'Error:' line on stderr, the right exit code, no traceback, no output dir."""

from __future__ import annotations

import os

import numpy as np

from tests.helpers.cli import assert_one_line_error, run_cli


def test_corrupt_model(tmp_path, digits_dir):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"PK\x03\x04 this is not a keras archive")
    proc = run_cli("build", bad, "--target", "rpi5", "--calib", digits_dir / "calib.npz", "--out", tmp_path / "d")
    assert_one_line_error(proc, 2, "cannot read model", "broken.keras")
    assert not (tmp_path / "d" / "rpi5").exists()


def test_truncated_h5(tmp_path, digits_dir):
    bad = tmp_path / "m.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    proc = run_cli("build", bad, "--target", "x86-cpu", "--precision", "fp32", "--out", tmp_path / "d")
    assert_one_line_error(proc, 2, "cannot read model")


def test_missing_model_and_unknown_format(tmp_path, cli_runner):
    code, _, err = cli_runner("build", tmp_path / "nope.keras", "--target", "rpi5", "--precision", "fp32")
    assert code == 2 and "does not exist" in err
    (tmp_path / "m.onnx").write_text("x")
    code, _, err = cli_runner("build", tmp_path / "m.onnx", "--target", "rpi5", "--precision", "fp32")
    assert code == 2 and "expected a .keras or .h5 file or a SavedModel directory" in err


def test_unknown_target_lists_valid_ones(digits_model_path, cli_runner):
    code, _, err = cli_runner("build", digits_model_path, "--target", "rpi9")
    assert code == 2
    assert "unknown target 'rpi9'" in err and "rpi5" in err and "jetson-nano" in err


def test_precision_the_profile_does_not_support(digits_model_path, tmp_path, cli_runner):
    profile = tmp_path / "fp32-only.toml"
    profile.write_text('id = "fp32-only"\ndevice = "MCU"\ntarget = "tflite"\nruntime = "litert"\n'
                       'precisions = ["fp32"]\ndefault_precision = "fp32"\n')
    code, _, err = cli_runner("build", digits_model_path, "--target", profile, "--precision", "fp16")
    assert code == 2
    assert "does not support precision 'fp16'" in err and "supported: fp32" in err


def test_int8_without_calibration(digits_model_path, cli_runner, tmp_path):
    code, _, err = cli_runner("build", digits_model_path, "--target", "rpi5", "--out", tmp_path)
    assert code == 2 and "int8 needs representative data: pass --calib" in err
    assert not any(tmp_path.iterdir())


def test_data_shape_mismatch(digits_model_path, tmp_path):
    np.savez(tmp_path / "wrong.npz", x=np.zeros((10, 28, 28, 1), np.float32))
    proc = run_cli("build", digits_model_path, "--target", "rpi5", "--calib", tmp_path / "wrong.npz",
                   "--out", tmp_path / "d")
    assert_one_line_error(proc, 2, "shape (28, 28, 1)", "expects (8, 8, 1)")
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


def test_unwritable_out_dir(digits_model_path, digits_dir, tmp_path, cli_runner):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = cli_runner("build", digits_model_path, "--target", "rpi5", "--calib", digits_dir / "calib.npz",
                              "--out", blocker)
    assert code == 2 and "exists and is not a directory" in err
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, _, err = cli_runner("build", digits_model_path, "--target", "rpi5", "--calib",
                                  digits_dir / "calib.npz", "--out", locked / "dist")
        assert code == 2 and "not writable" in err
    proc = run_cli("build", digits_model_path, "--target", "x86-cpu", "--precision", "fp32", "--out", "/proc/edgec-out")
    assert_one_line_error(proc, 2, "/proc")


def test_accuracy_budget_exceeded_exits_1(digits_model_path, digits_dir, tmp_path):
    # Calibrating on near-black images clips every real activation range: a real, large drop.
    np.savez(tmp_path / "dark.npz", x=np.full((50, 8, 8, 1), 0.01, np.float32))
    proc = run_cli("build", digits_model_path, "--target", "rpi5", "--calib", tmp_path / "dark.npz",
                   "--eval", digits_dir / "eval.npz", "--max-accuracy-drop", "1.0", "--out", tmp_path / "d")
    line = assert_one_line_error(proc, 1, "exceeds --max-accuracy-drop 1")
    assert "FAIL" in proc.stdout and "verification" in proc.stdout
    assert (tmp_path / "d" / "rpi5" / "model.tflite").exists(), "the artifact is complete; only the budget failed"
    assert line


def test_debug_shows_traceback_and_keeps_the_exit_code(tmp_path):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip")
    proc = run_cli("--debug", "build", bad, "--target", "x86-cpu", "--precision", "fp32", "--out", tmp_path)
    assert proc.returncode == 2 and "Traceback" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: cannot read model")


def test_debug_keeps_exit_3_for_internal_errors(monkeypatch, cli_runner):
    """An unexpected exception is exit 3 with --debug too (the traceback is printed)."""
    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr("edgec.profiles.all_profiles", broken)
    before = {key: os.environ.get(key) for key in ("EDGEC_DEBUG", "TF_CPP_MIN_LOG_LEVEL")}
    code, _, err = cli_runner("--debug", "targets")
    assert code == 3 and "Traceback" in err and "RuntimeError: boom" in err
    # --debug is for that command and its children: the commands run after it in this process
    # (and the builds they start) show one line again
    assert {key: os.environ.get(key) for key in before} == before
    code, _, err = cli_runner("targets")
    assert code == 3 and "internal error (RuntimeError: boom)" in err and "Traceback" not in err


def test_require_compiler_is_for_targets_with_a_compiler(digits_model_path, cli_runner):
    code, _, err = cli_runner("build", digits_model_path, "--target", "rpi5", "--precision", "fp32",
                              "--require-compiler")
    assert code == 2 and "--require-compiler applies to targets with a device compiler" in err


def test_max_accuracy_drop_needs_eval(digits_model_path, cli_runner):
    code, _, err = cli_runner("build", digits_model_path, "--target", "x86-cpu", "--precision", "fp32",
                              "--max-accuracy-drop", "1")
    assert code == 2 and "needs labelled --eval" in err
