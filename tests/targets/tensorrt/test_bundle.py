"""Precision rules per profile, the deferred build bundle (build.json) and the trtexec line."""

from __future__ import annotations

import json

import pytest

import edgec
from edgec.errors import EdgecError
from edgec.util import sha256_file
from tests.helpers.cli import run_cli

pytest.importorskip("tf2onnx", reason="needs the onnx extra: pip install 'edgec[onnx]'")

BUILD_KEYS = {"format", "version", "onnx", "onnx_sha256", "precision", "explicit_quantization", "workspace_mb",
              "dla_core", "gpu_fallback", "min_tensorrt", "compute_capability", "opset", "inputs", "outputs", "trtexec"}


def test_nano_int8_is_a_clear_error(digits_dir, tmp_path):
    out = tmp_path / "dist"
    proc = run_cli("build", digits_dir / "digits_cnn.keras", "--target", "jetson-nano", "--precision", "int8",
                   "--calib", digits_dir / "calib.npz", "--out", out)
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: ") and "fp16 is the fastest precision it has" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_nano_fp16_bundle(digits_dir, tmp_path):
    result = edgec.build(digits_dir / "digits_cnn.keras", target="jetson-nano", precision="fp16",
                         eval=str(digits_dir / "eval.npz"), out=tmp_path)
    spec = json.loads((result.out_dir / "build.json").read_text())
    assert BUILD_KEYS <= set(spec)
    assert spec["format"] == "edgec-tensorrt-build" and spec["version"] == 1
    assert spec["precision"] == "fp16" and spec["explicit_quantization"] is False
    assert spec["onnx_sha256"] == sha256_file(result.out_dir / "model.onnx")
    assert spec["opset"] == 13 and spec["min_tensorrt"] == "8.2" and spec["compute_capability"] == "5.3"
    assert spec["dla_core"] is None and spec["gpu_fallback"] is False and spec["workspace_mb"] == 1024
    assert spec["inputs"] == [{"name": "image", "shape": [1, 8, 8, 1], "dtype": "float32"}]
    assert spec["outputs"][0]["shape"] == [1, 10]
    assert "--fp16" in spec["trtexec"] and "--workspace=1024" in spec["trtexec"] and "--int8" not in spec["trtexec"]
    m = result.manifest
    assert m["tensorrt"]["trtexec"] == spec["trtexec"] and m["tensorrt"]["engine"] == "deferred"
    assert m["tensorrt"]["engine_reason"]
    assert [a["file"] for a in m["artifacts"]] == ["model.onnx", "build.json"]
    # the ONNX stays fp32 (TensorRT picks fp16 kernels): it matches Keras to float rounding
    assert m["verification"]["max_abs_diff"] < 1e-4 and m["verification"]["agreement"] == 1.0


def test_dla_profile_uses_dla_with_gpu_fallback(digits_dir, tmp_path):
    result = edgec.build(digits_dir / "digits_cnn.keras", target="jetson-xavier-nx", precision="fp16", out=tmp_path)
    spec = json.loads((result.out_dir / "build.json").read_text())
    assert spec["dla_core"] == 0 and spec["gpu_fallback"] is True and spec["opset"] == 17
    assert "--useDLACore=0 --allowGPUFallback" in spec["trtexec"] and "--memPoolSize=workspace:2048" in spec["trtexec"]


def test_trtexec_flags_follow_the_spec():
    from edgec.targets.tensorrt import trtexec_command

    spec = {"onnx": "model.onnx", "engine": "model.engine", "inputs": [{"name": "image", "shape": [1, 8, 8, 1]}],
            "precision": "fp32", "workspace_mb": 512, "min_tensorrt": "10.3", "dla_core": None, "gpu_fallback": False,
            "timing_cache": "timing.cache"}
    line = trtexec_command(spec)
    assert "--fp16" not in line and "--int8" not in line and "--useDLACore" not in line
    assert "--shapes=image:1x8x8x1" in line and "--memPoolSize=workspace:512" in line
    line = trtexec_command({**spec, "precision": "int8", "fp16_fallback": True, "dla_core": 1, "gpu_fallback": True})
    assert "--int8 --fp16" in line and "--useDLACore=1 --allowGPUFallback" in line


def test_dynamic_precision_is_rejected():
    from edgec import profiles
    from edgec.config import BuildOptions, Precision
    from edgec.targets.tensorrt import TensorRTTarget

    with pytest.raises(EdgecError, match="no dynamic-range precision"):
        TensorRTTarget().check(profiles.get("jetson-orin-nano"), Precision.DYNAMIC, BuildOptions())
    with pytest.raises(EdgecError, match="needs representative data"):
        TensorRTTarget().check(profiles.get("jetson-orin-nano"), Precision.INT8, BuildOptions())
    with pytest.raises(EdgecError, match="fp16 is the fastest"):
        TensorRTTarget().qat_scheme(profiles.get("jetson-nano"))
