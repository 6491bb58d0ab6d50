"""The benchmark core on real runtimes (LiteRT, ONNX Runtime), its statistics and its document."""

from __future__ import annotations

import gc
import importlib.util
import json
import random

import numpy as np
import pytest

from edgec.agent import bench, schema, stats
from edgec.agent.errors import AgentError, Unavailable
from tests.helpers.agent import FIXTURES


def test_percentiles_match_numpy():
    rng = random.Random(0)
    values = [rng.lognormvariate(0, 1) for _ in range(997)]
    for q in (0, 1, 50, 90, 99, 100):
        assert stats.percentile(sorted(values), q) == pytest.approx(float(np.percentile(values, q)))
    s = stats.summarize([v / 1000 for v in values])
    assert s["count"] == 997
    assert s["median"] == pytest.approx(float(np.median(values)))
    assert s["mean"] == pytest.approx(float(np.mean(values)))
    assert s["std"] == pytest.approx(float(np.std(values, ddof=1)))
    assert s["min"] == pytest.approx(min(values)) and s["max"] == pytest.approx(max(values))


def test_timed_loop_counts_and_gaps():
    calls = []
    ticks = iter(range(10_000))

    def clock():
        return float(next(ticks))

    latencies, start, end = bench.timed_loop(lambda: calls.append(1), runs=25, min_seconds=None, clock=clock,
                                             estimate_s=1.0)
    assert len(calls) == len(latencies) == 25
    assert all(v == 1.0 for v in latencies)  # one clock read per inference, no second one
    assert end - start >= 25


def test_litert_int8_report(digits_builds):
    model = digits_builds["int8"] / "model.tflite"
    manifest = json.loads((digits_builds["int8"] / "manifest.json").read_text())
    doc = bench.run_benchmark(str(model), runs=50, warmup=3, threads=1, power="none")
    assert schema.validate(doc) == []
    assert doc["artifact"]["sha256"] == manifest["artifacts"][0]["sha256"]
    assert doc["runtime"]["name"] == "litert" and doc["runtime"]["module"] == "ai_edge_litert"
    assert doc["runtime"]["version"] == importlib.metadata.version("ai-edge-litert")
    assert doc["runtime"]["threads"] == 1
    assert doc["latency_ms"]["count"] == 50 and doc["throughput"]["runs"] == 50
    assert doc["timings_ms"]["cold_first_inference"] > 0 and doc["timings_ms"]["load"] > 0
    (inp,) = doc["inputs"]
    q = manifest["artifacts"][0]["inputs"][0]["quantization"]
    assert inp["dtype"] == "int8" and inp["shape"] == [1, 8, 8, 1] and inp["source"] == "random"
    assert inp["range"] == [-128, 127]  # the quantized range of an int8 input
    assert inp["float_range"] == [pytest.approx(0.0, abs=1e-6), pytest.approx((127 - q["zero_point"]) * q["scale"], rel=1e-5)]
    assert doc["power"] == {"available": False, "reason": "power measurement disabled (--power none)"}
    assert doc["device"]["kind"] and doc["system"]["before"]["temperatures_c"] is not None
    assert gc.isenabled()


def test_min_seconds_sample_file_and_batch(digits_builds, digits_dir, tmp_path):
    model = digits_builds["fp32"] / "model.tflite"
    x = np.load(digits_dir / "eval.npz")["x"][:8]
    np.save(tmp_path / "x.npy", x)
    doc = bench.run_benchmark(str(model), min_seconds=0.2, warmup=1, batch=4, input=str(tmp_path / "x.npy"),
                              power="none")
    assert doc["latency_ms"]["count"] >= bench.MIN_RUNS and doc["throughput"]["timed_s"] >= 0.2
    assert doc["inputs"][0]["source"] == "file" and doc["inputs"][0]["shape"] == [4, 8, 8, 1]
    assert doc["throughput"]["batch"] == 4
    assert doc["throughput"]["inferences_per_s"] == pytest.approx(
        4 * doc["throughput"]["runs"] / doc["throughput"]["timed_s"])


def test_power_from_a_fixture_tree_lands_in_the_report(digits_builds):
    """The bench with the Orin Nano JetPack 6 INA3221 tree: real timing loop, fixture watts."""
    model = digits_builds["int8"] / "model.tflite"
    doc = bench.run_benchmark(str(model), runs=20, warmup=2, power="auto", idle_seconds=0.2, power_min_seconds=0.3,
                              root=str(FIXTURES / "jetson-orin-nano-jp6"))
    p = doc["power"]
    assert p["available"] and p["sensor"] == "ina3221" and p["total_rail"] == "VDD_IN" and p["scope"] == "module"
    assert p["active_w"] == pytest.approx(5.088 * 1.016) and p["idle_w"] == pytest.approx(5.088 * 1.016)
    runs, timed = doc["throughput"]["runs"], doc["throughput"]["timed_s"]
    assert timed >= 0.3 and runs >= 20  # the window was stretched so the sensor covers it
    assert p["energy_mj_per_inference"]["total"] == pytest.approx(p["active_w"] * timed / runs * 1000)
    assert p["energy_mj_per_inference"]["above_idle"] == pytest.approx(0.0, abs=1e-9)
    assert doc["device"]["kind"] == "jetson" and doc["system"]["before"]["nvpmodel"]["name"] == "15W"


def test_onnxruntime(tiny_onnx):
    pytest.importorskip("onnxruntime")
    doc = bench.run_benchmark(str(tiny_onnx), runs=30, batch=3, power="none", threads=1)
    assert doc["runtime"]["name"] == "onnxruntime" and doc["runtime"]["delegate"] == "CPUExecutionProvider"
    assert doc["inputs"][0]["shape"] == [3, 16] and doc["inputs"][0]["dtype"] == "float32"
    assert doc["artifact"]["format"] == "onnx" and doc["latency_ms"]["count"] == 30


def test_expected_sha256_is_enforced(digits_builds):
    model = digits_builds["int8"] / "model.tflite"
    with pytest.raises(AgentError, match="expected 0000"):
        bench.run_benchmark(str(model), runs=1, power="none", expect_sha256="0000")


@pytest.mark.parametrize("options, message", [
    ({"runs": 10, "min_seconds": 1.0}, "not both"),
    ({"runs": 0}, "--runs must be an integer >= 1"),
    ({"warmup": -1}, "--warmup"),
    ({"frobnicate": 1}, "unknown bench options frobnicate"),
    ({"min_seconds": -2}, "--min-seconds must be a number >= 0"),
])
def test_bad_options(digits_builds, options, message):
    with pytest.raises(AgentError, match=message):
        bench.run_benchmark(str(digits_builds["int8"] / "model.tflite"), **options)


def test_runtime_choice_errors(digits_builds, tiny_onnx):
    with pytest.raises(AgentError, match="cannot run a tflite artifact; use one of: litert, tflite, edgetpu"):
        bench.run_benchmark(str(digits_builds["int8"] / "model.tflite"), runtime="onnxruntime", runs=1)
    with pytest.raises(AgentError, match="runtime 'tensorrt' cannot run a onnx artifact"):
        bench.run_benchmark(str(tiny_onnx), runtime="tensorrt", runs=1)
    with pytest.raises(AgentError, match="unknown runtime 'tvm'"):
        bench.run_benchmark(str(tiny_onnx), runtime="tvm", runs=1)


def test_absent_runtimes_say_so(digits_builds):
    model = str(digits_builds["int8"] / "model.tflite")
    if importlib.util.find_spec("tflite_runtime") is None:
        with pytest.raises(Unavailable, match="LiteRT absent: cannot import tflite_runtime"):
            bench.run_benchmark(model, runtime="tflite", runs=1, power="none")
    try:
        import ctypes
        ctypes.CDLL("libedgetpu.so.1")
    except OSError:
        with pytest.raises(Unavailable, match="Edge TPU runtime absent: cannot load libedgetpu.so.1"):
            bench.run_benchmark(model, runtime="edgetpu", runs=1, power="none")


def test_schema_rejects_what_it_should(digits_builds):
    doc = bench.run_benchmark(str(digits_builds["int8"] / "model.tflite"), runs=5, power="none")
    assert schema.check(doc) is doc
    bad = json.loads(json.dumps(doc))
    del bad["latency_ms"]["p99"]
    bad["runtime"]["threads"] = "two"
    problems = schema.validate(bad)
    assert "latency_ms.p99: missing" in problems and any(p.startswith("runtime.threads") for p in problems)
    newer = dict(doc, schema_version=schema.SCHEMA_VERSION + 1)
    assert "newer than this reader understands" in schema.validate(newer)[0]
    unordered = json.loads(json.dumps(doc))
    unordered["latency_ms"]["p90"] = unordered["latency_ms"]["max"] + 1
    assert any("min <= median" in p for p in schema.validate(unordered))
    no_reason = json.loads(json.dumps(doc))
    no_reason["power"] = {"available": False}
    assert schema.validate(no_reason) == ["power.reason: missing"]
    invented = json.loads(json.dumps(doc))
    invented["power"] = {"available": False, "reason": "no sensor", "mean_w": 2.5}
    assert schema.validate(invented) == ["power: unavailable power carries no readings, got mean_w"]
    huge = json.loads(json.dumps(doc))
    huge["latency_ms"]["count"] = 2 ** 70
    assert any(p.startswith("latency_ms.count: expected integer") for p in schema.validate(huge))
    with pytest.raises(schema.SchemaError, match="invalid agent report"):
        schema.check(bad)
