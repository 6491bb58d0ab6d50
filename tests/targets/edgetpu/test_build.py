"""edgec build for Coral profiles: artifacts, manifest, verification, errors, CLI."""

from __future__ import annotations

import json
import shutil

import pytest

from edgec import profiles
from edgec.util import sha256_file
from tests.helpers.cli import run_cli

NO_COMPILER = shutil.which("edgetpu_compiler") is None


def test_artifacts_and_manifest_without_the_compiler(coral_build):
    m = coral_build.manifest
    d = coral_build.out_dir
    assert m["target"] == "edgetpu" and m["runtime"] == "edgetpu" and m["precision"] == "int8"
    files = [a["file"] for a in m["artifacts"]]
    if NO_COMPILER:
        assert files == ["model_int8.tflite", "edgetpu_report.json"]
    else:
        assert files[0] == "model_edgetpu.tflite"
    for a in m["artifacts"]:
        assert sha256_file(d / a["file"]) == a["sha256"]
    int8 = m["artifacts"][files.index("model_int8.tflite")]
    assert int8["inputs"][0]["dtype"] == "uint8" and int8["inputs"][0]["shape"] == [1, 8, 8, 1]
    assert int8["outputs"][0]["dtype"] == "uint8" and int8["weight_dtypes"] == ["int32", "int8"]
    e = m["edgetpu"]
    if NO_COMPILER:
        assert e["compiled"] is False and e["not_compiled"] == "not compiled: edgetpu_compiler not found"
        assert e["compiler"]["command"] == (f"edgetpu_compiler -s -m 14 -t 180 -o {d} {d / 'model_int8.tflite'}")
        assert not (d / "model_edgetpu.tflite").exists()
    assert m["options"]["require_compiler"] is False
    assert e["settings"] == {"min_runtime_version": 14, "cache_mb": 8.0, "num_tpus": 1, "compile_timeout_s": 180,
                             "variant": "usb"}
    assert json.loads((d / "manifest.json").read_text())["edgetpu"] == e


def test_int8_model_is_verified_on_the_host(coral_build):
    v = coral_build.manifest["verification"]
    assert v["runtime"] == "litert" and v["artifact"] == "model_int8.tflite" and v["samples"] == 540
    assert v["float_accuracy"] > 0.9 and abs(v["accuracy_drop_points"]) <= 1.5 and v["agreement"] >= 0.97


def test_coral_profiles_are_data():
    ids = {p.id: p for p in profiles.all_profiles() if p.target == "edgetpu"}
    assert set(ids) >= {"coral-usb", "coral-devboard", "coral-m2", "coral-dual-m2"}
    assert ids["coral-dual-m2"].edgetpu["num_tpus"] == 2 and ids["coral-m2"].edgetpu["variant"] == "m2"
    assert all(p.precisions == ("int8",) and p.runtime == "edgetpu" for p in ids.values())


def test_float_request_is_one_clear_error(digits_dir, tmp_path):
    proc = run_cli("build", digits_dir / "digits_cnn.keras", "--target", "coral-usb", "--precision", "fp32",
                   "--calib", digits_dir / "calib.npz", "--out", tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: the Edge TPU runs only full-integer 8-bit models")
    assert "'fp32'" in lines[0] and "coral-usb" in lines[0] and "--precision int8" in lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "coral-usb").exists()


def test_missing_calibration_data_is_a_clear_error(digits_dir, tmp_path):
    proc = run_cli("build", digits_dir / "digits_cnn.keras", "--target", "coral-m2", "--out", tmp_path)
    assert proc.returncode == 2 and "pass --calib DATA" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(not NO_COMPILER, reason="edgetpu_compiler is installed here")
def test_require_compiler_fails_fast_with_exit_1(digits_dir, tmp_path):
    proc = run_cli("build", digits_dir / "digits_cnn.keras", "--target", "coral-usb", "--calib",
                   digits_dir / "calib.npz", "--out", tmp_path, "--require-compiler")
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("Error: --require-compiler: edgetpu_compiler not found on PATH") and "\n" not in line
    assert f"edgetpu_compiler -s -m 14 -t 180 -o {tmp_path / 'coral-usb'}" in line
    assert not (tmp_path / "coral-usb").exists()


@pytest.mark.skipif(not NO_COMPILER, reason="edgetpu_compiler is installed here")
def test_cli_build_exits_0_and_prints_the_map_and_the_command(digits_dir, tmp_path, cli_runner):
    code, out, _ = cli_runner("build", digits_dir / "digits_cnn.keras", "--target", "coral-devboard", "--calib",
                              digits_dir / "calib.npz", "--calib-samples", "50", "--out", tmp_path)
    assert code == 0
    assert "Edge TPU: 9/9 ops mapped (100.0 %)" in out
    assert "not compiled: edgetpu_compiler not found" in out
    assert f"compile with: edgetpu_compiler -s -m 14 -t 180 -o {tmp_path / 'coral-devboard'}" in out


def test_inspect_edgetpu(coral_build, fp32_digits, cli_runner):
    code, out, _ = cli_runner("inspect", coral_build.out_dir / "model_int8.tflite", "--edgetpu", "--json")
    assert code == 0
    report = json.loads(out)
    saved = json.loads((coral_build.out_dir / "edgetpu_report.json").read_text())
    assert report["ops"] == saved["ops"] and report["totals"] == saved["totals"]
    code, out, _ = cli_runner("inspect", fp32_digits, "--edgetpu")
    assert code == 0 and "CONV_2D" in out and "CPU" in out and "float32" in out
    assert "Edge TPU: 0/7 ops mapped" in out and "first CPU op: #0 CONV_2D" in out
