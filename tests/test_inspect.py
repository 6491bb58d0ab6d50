"""edgec inspect reads the artifact itself: ops, weights, sparsity, sizes."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

import edgec
from edgec import tflite_model
from edgec.inspection import inspect_tflite


@pytest.fixture(scope="module")
def fp32_artifact(digits_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("insp")
    return edgec.build(digits_dir / "digits_cnn.keras", target="x86-cpu", precision="fp32", out=out).out_dir / "model.tflite"


def test_fp32_params_match_keras(fp32_artifact, digits_model_path):
    from edgec.model_io import load_model

    report = inspect_tflite(fp32_artifact)
    keras_params = load_model(digits_model_path).model.count_params()
    assert report["totals"]["params"] == keras_params
    assert report["totals"]["gzip_bytes"] == len(gzip.compress(fp32_artifact.read_bytes(), 9, mtime=0))
    assert report["totals"]["gzip_bytes"] < report["totals"]["file_bytes"]
    assert report["op_counts"] == {"CONV_2D": 3, "FULLY_CONNECTED": 2, "MAX_POOL_2D": 1, "MEAN": 1}
    conv = report["ops"][0]
    assert conv["op"] == "CONV_2D" and conv["weight_shape"] == [16, 3, 3, 1] and conv["params"] == 16 * 9 + 16


def test_zero_share_counts_real_zeros(fp32_artifact, tmp_path):
    """Zero a known share of one kernel in the flatbuffer bytes and read it back."""
    raw = bytearray(fp32_artifact.read_bytes())
    m = tflite_model.load(bytes(raw))
    kernel = m.kernel(m.operators[1])
    data = kernel.data.copy()
    flat = data.reshape(-1)
    flat[: flat.size // 2] = 0
    start = bytes(raw).find(kernel.data.tobytes())
    assert start > 0
    raw[start:start + data.nbytes] = data.tobytes()
    path = tmp_path / "half.tflite"
    path.write_bytes(bytes(raw))
    row = inspect_tflite(path)["ops"][1]
    assert row["zero_share"] == pytest.approx(np.mean(data == 0))
    assert 0.5 <= row["zero_share"] < 0.52


def test_cli_json_and_table(fp32_artifact, cli_runner):
    code, out, _ = cli_runner("inspect", fp32_artifact, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["inputs"][0]["dtype"] == "float32" and report["totals"]["ops"] == 7
    code, out, _ = cli_runner("inspect", fp32_artifact)
    assert code == 0 and "CONV_2D" in out and "gzip" in out


def test_not_a_tflite(tmp_path, cli_runner):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"\0" * 100)
    code, _, err = cli_runner("inspect", bad)
    assert code == 2 and "not a TFLite model" in err
