"""edgec inspect model.onnx: ops, Q/DQ placement and zero points, parameters, sizes."""

from __future__ import annotations

import gzip
import json

import pytest

import edgec

pytest.importorskip("tf2onnx", reason="needs the onnx extra: pip install 'edgec[onnx]'")


@pytest.fixture(scope="module")
def int8_onnx(digits_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("trt-insp")
    return edgec.build(digits_dir / "digits_cnn.keras", target="jetson-agx-orin", precision="int8",
                       calib=str(digits_dir / "calib.npz"), out=out).out_dir / "model.onnx"


def test_report_reads_the_file(int8_onnx, digits_model_path):
    from edgec.model_io import load_model
    from edgec.targets.tensorrt.inspect import inspect_onnx

    report = inspect_onnx(int8_onnx)
    keras_model = load_model(digits_model_path).model
    assert report["totals"]["params"] == keras_model.count_params()
    assert report["totals"]["gzip_bytes"] == len(gzip.compress(int8_onnx.read_bytes(), 9, mtime=0))
    assert report["totals"]["zero_points"] == [0] and report["opset"] == 17
    weighted = [r for r in report["ops"] if r["op"] in ("Conv", "Gemm")]
    weights = [q for q in report["qdq"] if q["kind"] == "weight"]
    assert len(weighted) == len(weights) == 5
    for op, q in zip(weighted, weights, strict=True):
        assert op["quantized_input"] and q["per_channel"] and q["axis"] == 0
        assert q["channels"] == op["weight_shape"][0] and q["zero_points"] == [0] and q["dtype"] == "int8"
    assert report["ops"][1]["weight_shape"] == [16, 1, 3, 3]


def test_cli_json_and_table(int8_onnx, cli_runner):
    code, out, _ = cli_runner("inspect", int8_onnx, "--json")
    assert code == 0 and json.loads(out)["format"] == "onnx"
    code, out, _ = cli_runner("inspect", int8_onnx)
    assert code == 0 and "Q/DQ placement" in out and "per-channel x16" in out and "zero points [0]" in out


def test_not_onnx_is_a_clear_error(tmp_path, cli_runner):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    code, _, err = cli_runner("inspect", bad)
    assert code == 2 and "Error:" in err and "bad.onnx" in err
