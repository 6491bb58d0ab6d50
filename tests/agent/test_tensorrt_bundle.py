"""TensorRT bundles: reading build.json, the engine cache key and cache files. TensorRT itself
is not installable here (NVIDIA's index), so running an engine is skipped with that reason and
the adapter's own message is checked."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil

import pytest

from edgec.agent import bench
from edgec.agent.errors import AgentError, Unavailable
from edgec.agent.runtimes import artifact_format, choose
from edgec.agent.runtimes import tensorrt as trt_adapter


def make_bundle(directory, onnx_src, **overrides):
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(onnx_src, directory / "model.onnx")
    spec = {"format": "edgec-tensorrt-build", "version": 1, "onnx": "model.onnx",
            "onnx_sha256": hashlib.sha256((directory / "model.onnx").read_bytes()).hexdigest(),
            "precision": "fp16", "explicit_quantization": False, "workspace_mb": 1024, "dla_core": None,
            "gpu_fallback": True, "min_tensorrt": "8.2", "compute_capability": "5.3", "opset": 13,
            "inputs": [{"name": "x", "shape": [-1, 16], "dtype": "float32"}],
            "outputs": [{"name": "y", "shape": [-1, 8], "dtype": "float32"}],
            "trtexec": "trtexec --onnx=model.onnx --fp16 --saveEngine=model.engine"}
    spec.update(overrides)
    (directory / "build.json").write_text(json.dumps(spec))
    return directory


def test_read_bundle(tmp_path, tiny_onnx):
    d = make_bundle(tmp_path / "b", tiny_onnx)
    for path in (d, d / "build.json"):
        b = trt_adapter.read_bundle(str(path))
        assert b["precision"] == "fp16" and b["onnx_path"] == str(d / "model.onnx") and b["engine_path"] is None
        assert artifact_format(str(path)) == "tensorrt-bundle"
        assert choose("auto", str(path), "tensorrt-bundle") == "tensorrt"
    (d / "model.engine").write_bytes(b"engine")
    assert trt_adapter.read_bundle(str(d))["engine_path"] == str(d / "model.engine")


@pytest.mark.parametrize("overrides, message", [
    ({"format": "something-else"}, "is not an edgec TensorRT bundle"),
    ({"version": 2}, "has bundle version 2; this agent reads version 1 (update the agent)"),
    ({"precision": "int4"}, "precision 'int4'; expected one of fp32, fp16, int8"),
    ({"onnx": "../model.onnx"}, "must be a file name inside the bundle"),
    ({"onnx_sha256": "0" * 64}, "the bundle is incomplete or was modified"),
    ({"onnx": "other.onnx"}, "names other.onnx, which is missing"),
])
def test_bad_bundles(tmp_path, tiny_onnx, overrides, message):
    d = make_bundle(tmp_path / "b", tiny_onnx, **overrides)
    with pytest.raises(AgentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        trt_adapter.read_bundle(str(d))


def test_missing_field_and_bad_json(tmp_path, tiny_onnx):
    d = make_bundle(tmp_path / "b", tiny_onnx)
    spec = json.loads((d / "build.json").read_text())
    del spec["onnx_sha256"]
    (d / "build.json").write_text(json.dumps(spec))
    with pytest.raises(AgentError, match="lacks onnx_sha256"):
        trt_adapter.read_bundle(str(d))
    (d / "build.json").write_text("{not json")
    with pytest.raises(AgentError, match="is not valid JSON"):
        trt_adapter.read_bundle(str(d))


def test_cache_key_is_tensorrt_x_gpu_x_precision_x_onnx(monkeypatch, tmp_path):
    base = dict(tensorrt_version="8.2.1.8", gpu="NVIDIA Tegra X1", compute_capability="5.3", precision="fp16",
                onnx_sha256="ab" * 32)
    key, parts = trt_adapter.cache_key(**base)
    assert trt_adapter.cache_key(**base)[0] == key and len(key) == 64
    for field, other in (("tensorrt_version", "8.5.2.2"), ("gpu", "Orin"), ("compute_capability", "8.7"),
                         ("precision", "fp32"), ("onnx_sha256", "cd" * 32)):
        assert trt_adapter.cache_key(**dict(base, **{field: other}))[0] != key, field
    assert trt_adapter.cache_key(**base, dla_core=0)[0] != key
    assert trt_adapter.cache_key(**base, batch=4)[0] != key
    monkeypatch.setenv("EDGEC_AGENT_CACHE", str(tmp_path / "cache"))
    path = trt_adapter.cache_path(key, parts)
    assert path == str(tmp_path / "cache" / "tensorrt" / f"{'ab' * 6}-fp16-trt8.2.1.8-sm53-{key[:12]}.engine")
    trt_adapter.store_engine(path, b"serialized", parts)
    assert open(path, "rb").read() == b"serialized"
    assert json.loads(open(path[:-len(".engine")] + ".json").read()) == parts
    assert not [p for p in (tmp_path / "cache" / "tensorrt").iterdir() if p.name.startswith(".tmp-")]
    monkeypatch.delenv("EDGEC_AGENT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert trt_adapter.cache_dir() == str(tmp_path / "xdg" / "edgec-agent" / "tensorrt")


def test_version_checks():
    assert trt_adapter.parse_version("8.2.1.8") == (8, 2, 1, 8)
    assert trt_adapter.parse_version("10.3.0.post1") == (10, 3, 0)
    trt_adapter.check_min_version("8.2.1", "8.2")
    trt_adapter.check_min_version("10.0.1", "8.2")
    with pytest.raises(Unavailable, match="TensorRT 8.0.1 is older than this bundle's min_tensorrt 8.2"):
        trt_adapter.check_min_version("8.0.1", "8.2")


def test_tensorrt_absent_is_said_plainly(tmp_path, tiny_onnx):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here; the absent path cannot be exercised")
    d = make_bundle(tmp_path / "b", tiny_onnx)
    with pytest.raises(Unavailable, match="TensorRT absent: cannot import the Python module 'tensorrt'"):
        bench.run_benchmark(str(d), runs=1, power="none")


@pytest.mark.jetson
def test_engine_built_and_cached_on_a_gpu(tmp_path, tiny_onnx):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (it comes from NVIDIA's index or JetPack)")
    d = make_bundle(tmp_path / "b", tiny_onnx, precision="fp32")
    first = bench.run_benchmark(str(d), runs=20, power="none")
    assert first["runtime"]["details"]["engine"]["source"] == "built"
    second = bench.run_benchmark(str(d), runs=20, power="none")
    assert second["runtime"]["details"]["engine"]["source"] == "cache"
    assert second["runtime"]["details"]["engine"]["cache_key"] == first["runtime"]["details"]["engine"]["cache_key"]
