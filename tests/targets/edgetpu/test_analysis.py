"""The op-by-op Edge TPU map, read from real int8 artifacts converted here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgec import tflite_model
from edgec.targets.edgetpu import EdgeTPUSettings as Settings
from edgec.targets.edgetpu import analyze
from tests.helpers.edgetpu import keras_macs, random_npz


def _no_float_tensors(path) -> list[str]:
    m = tflite_model.load(path)
    return [t.name for t in m.tensors if t.dtype not in ("int8", "uint8", "int32")]


def test_digits_cnn_maps_every_op(coral_build, digits_model_path):
    from edgec.model_io import load_model

    report = json.loads((coral_build.out_dir / "edgetpu_report.json").read_text())
    t = report["totals"]
    assert t["ops"] == 9 and t["ops_on_tpu"] == 9 and t["op_share"] == 1.0
    assert all(r["on_tpu"] and r["category"] == "mapped" for r in report["ops"])
    assert report["first_cpu_op"] is None and report["tpu_subgraph"] == {"start": 0, "end": 8}
    assert t["macs"] == keras_macs(load_model(digits_model_path).model) and t["mac_share"] == 1.0
    assert report["float_tensors"] == [] and _no_float_tensors(coral_build.out_dir / "model_int8.tflite") == []
    int8 = tflite_model.load(coral_build.out_dir / "model_int8.tflite")
    params = sum(t.nbytes for t in int8.tensors if t.is_parameter)
    assert t["param_bytes"] == t["param_bytes_on_tpu"] == params
    assert t["cache_bytes"] == 8 * 2**20 and t["off_chip_bytes_estimate"] == 0
    activations = [t for t in int8.tensors if not t.is_constant]
    assert all(t.shape_signature[0] == 1 and min(t.shape_signature) > 0 for t in activations), "static batch 1"


@pytest.mark.slow
def test_mobilenet_v2_maps_every_op(mobilenet):
    model, result = mobilenet
    report = json.loads((result.out_dir / "edgetpu_report.json").read_text())
    t = report["totals"]
    assert t["ops"] >= 60 and t["ops_on_tpu"] == t["ops"], [r for r in report["ops"] if not r["on_tpu"]]
    assert {r["op"] for r in report["ops"]} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED",
                                                "SOFTMAX", "QUANTIZE"}
    assert t["macs"] == keras_macs(model) and t["mac_share"] == 1.0
    assert report["float_tensors"] == [] and _no_float_tensors(result.out_dir / "model_int8.tflite") == []
    assert 0 < t["param_bytes_on_tpu"] < t["cache_bytes"] and report["warnings"] == []
    io = result.manifest["artifacts"][0]
    assert io["inputs"][0]["dtype"] == "uint8" and io["inputs"][0]["shape"] == [1, 96, 96, 3]


def test_mid_graph_cpu_op_splits_the_model(leaky_build):
    report = json.loads((leaky_build.out_dir / "edgetpu_report.json").read_text())
    ops = report["ops"]
    leaky = next(r["index"] for r in ops if r["op"] == "LEAKY_RELU")
    assert 0 < leaky < len(ops) - 1, "the unsupported op sits in the middle"
    assert report["first_cpu_op"]["index"] == leaky and report["first_cpu_op"]["op"] == "LEAKY_RELU"
    assert report["first_cpu_op"]["category"] == "unsupported_op"
    assert all(r["on_tpu"] for r in ops[:leaky])
    assert all(not r["on_tpu"] and r["category"] == "after_cpu_op" for r in ops[leaky + 1:])
    assert all("LEAKY_RELU" in r["reason"] and "supported by itself" in r["reason"] for r in ops[leaky + 1:])
    t = report["totals"]
    assert t["ops_on_tpu"] == leaky and 0 < t["mac_share"] < 1
    mapped_macs = sum(r["macs"] for r in ops[:leaky])
    assert t["macs_on_tpu"] == mapped_macs > 0
    assert leaky_build.manifest["edgetpu"]["analysis"]["first_cpu_op"]["op"] == "LEAKY_RELU"
    assert any("LEAKY_RELU" in w for w in report["warnings"])


def test_float_model_maps_nothing_and_says_why(fp32_digits):
    report = analyze(fp32_digits)
    t = report["totals"]
    assert t["ops_on_tpu"] == 0 and t["mac_share"] == 0.0
    assert report["first_cpu_op"]["index"] == 0 and report["tpu_subgraph"] is None
    first = report["ops"][0]
    assert first["category"] == "dtype" and "float32" in first["reason"]
    assert "dynamic shape" in first["reason"], "the TFLite target keeps the batch dimension dynamic"
    assert report["float_tensors"]


def test_old_runtime_leaves_quantize_on_the_cpu(coral_build):
    """Coral lists Quantize as runtime 13+: with -m 12 the I/O QUANTIZE ops cannot map."""
    report = analyze(coral_build.out_dir / "model_int8.tflite", Settings(min_runtime_version=12))
    ops = report["ops"]
    assert ops[0]["op"] == "QUANTIZE" and not ops[0]["on_tpu"] and ops[0]["category"] == "runtime_version"
    assert "before the Edge TPU subgraph" in ops[0]["reason"]
    assert all(r["on_tpu"] for r in ops[1:-1])
    assert report["first_cpu_op"]["index"] == len(ops) - 1 and ops[-1]["op"] == "QUANTIZE"
    assert report["tpu_subgraph"] == {"start": 1, "end": len(ops) - 2}


@pytest.mark.slow
def test_parameters_beyond_the_cache_warn_about_off_chip_streaming(mobilenet):
    path = mobilenet[1].out_dir / "model_int8.tflite"
    small = analyze(path, Settings(cache_mb=1))
    t = small["totals"]
    assert t["param_bytes_on_tpu"] > 2**20
    assert t["off_chip_bytes_estimate"] == t["param_bytes_on_tpu"] - 2**20
    assert any("off-chip" in w for w in small["warnings"])
    two = analyze(path, Settings(cache_mb=1, num_tpus=2))
    assert two["totals"]["cache_bytes"] == 2 * 2**20 and two["totals"]["off_chip_bytes_estimate"] == 0
    assert not any("off-chip" in w for w in two["warnings"])


def _convert(model, shape, tmp_path):
    from edgec.calibration import load
    from edgec.config import Precision
    from edgec.targets.tflite import convert

    data = load(random_npz(tmp_path / "c.npz", shape, n=16), shape, limit=16)
    return convert(model, Precision.INT8, calib=data, io_dtype="uint8", batch_size=1)


def test_tensor_with_more_than_three_non_unit_dims_goes_to_cpu(tmp_path):
    from edgec.tfcompat import tf_and_keras

    tf, keras = tf_and_keras()
    inp = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)
    x = keras.layers.Reshape((2, 4, 8, 4))(x)  # [1, 2, 4, 8, 4]: 4 dims > 1
    x = keras.layers.Lambda(lambda t: tf.reduce_max(t, axis=1))(x)  # back to [1, 4, 8, 4]
    model = keras.Model(inp, keras.layers.Conv2D(2, 1)(x))
    report = analyze(_convert(model, (8, 8, 4), tmp_path))
    first = report["first_cpu_op"]
    assert first is not None and first["category"] == "rank", report["ops"]
    assert "outside the 3 innermost" in first["reason"]
    assert report["ops"][first["index"] - 1]["on_tpu"]


def test_op_constraints_from_the_table(tmp_path):
    """A fused activation on a pool and a dilation that differs in x and y are named."""
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    inp = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)
    x = keras.layers.Conv2D(4, 3, padding="same", dilation_rate=(1, 2))(x)
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x))
    report = analyze(_convert(model, (16, 16, 1), tmp_path))
    dilated = [r for r in report["ops"] if r["category"] == "op_constraint"]
    assert dilated and "dilation 1x2" in dilated[0]["reason"], report["ops"]


@pytest.mark.parametrize("name", ["model_int8.tflite"])
def test_report_is_json_and_matches_manifest(coral_build, name):
    report = json.loads((coral_build.out_dir / "edgetpu_report.json").read_text())
    assert report["file"] == name
    summary = coral_build.manifest["edgetpu"]["analysis"]
    assert summary["ops_on_tpu"] == report["totals"]["ops_on_tpu"]
    assert summary["macs"] == report["totals"]["macs"]
    for row in report["ops"]:
        assert set(row) >= {"index", "op", "version", "on_tpu", "category", "reason", "macs", "param_bytes"}
    assert np.isclose(report["totals"]["cache_share"],
                      report["totals"]["param_bytes_on_tpu"] / report["totals"]["cache_bytes"], rtol=1e-4)
