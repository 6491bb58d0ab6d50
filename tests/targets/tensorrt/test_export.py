"""Float ONNX export (tf2onnx) matches Keras under ONNX Runtime; checks against TensorRT's parser."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.errors import EdgecError

onnx = pytest.importorskip("onnx", reason="needs the onnx extra: pip install 'edgec[onnx]'")
pytest.importorskip("onnxruntime", reason="needs the onnx extra")
pytest.importorskip("tf2onnx", reason="needs the onnx extra")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["cnn", "residual", "separable"])
@pytest.mark.parametrize("opset", [13, 17])
def test_float_onnx_matches_keras(arch, opset, trained_models, digits_split):
    from edgec.targets.tensorrt import export, onnx_io

    model = trained_models[arch]
    proto = export.export_onnx(model, opset)
    assert onnx_io.opset_of(proto) == opset
    report = export.check_for_tensorrt(proto, "8.2" if opset == 13 else "8.5")
    assert report["onnx_checker"] == "passed" and not report["unknown_ops"]
    x = digits_split.x_test
    ref = np.asarray(model(x, training=False))
    got = onnx_io.OrtRunner(proto.SerializeToString())(x)[0]
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-4


def test_the_same_model_exports_to_the_same_bytes_twice_in_one_process(trained_models):
    """tf2onnx names the nodes it adds from a process-wide counter: a second export in a
    long-running process (edgec ci, edgec search) must not get other names than a fresh one."""
    from edgec.targets.tensorrt import export

    first = export.export_onnx(trained_models["cnn"], 13).SerializeToString()
    assert export.export_onnx(trained_models["cnn"], 13).SerializeToString() == first


def _graph(op: str, opset: int, zero_point: int | None = None):
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    inits, nodes = [], []
    if zero_point is None:
        out_type = TensorProto.INT64 if op == "NonZero" else TensorProto.FLOAT
        nodes.append(helper.make_node(op, ["x"], ["y"]))
        y = helper.make_tensor_value_info("y", out_type, [2, "n"] if op == "NonZero" else [1, 4])
    else:
        inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                 numpy_helper.from_array(np.array(zero_point, np.int8), "z")]
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_op_table_rejects_what_the_parser_rejects():
    from edgec.targets.tensorrt import export

    model = _graph("NonZero", 13)
    with pytest.raises(EdgecError, match=r"TensorRT 8\.2.*NonZero"):
        export.check_for_tensorrt(model, "8.2")
    assert export.check_for_tensorrt(_graph("NonZero", 13), "8.5")["op_counts"] == {"NonZero": 1}
    assert export.check_for_tensorrt(_graph("Relu", 13), "8.2")["op_table"] == "8.2"


def test_opset_above_the_parser_is_rejected():
    from edgec.targets.tensorrt import export

    with pytest.raises(EdgecError, match=r"opset 17 is outside .*TensorRT 8\.2.*at most 13"):
        export.check_for_tensorrt(_graph("Relu", 17), "8.2")


def test_nonzero_zero_point_is_rejected():
    from edgec.targets.tensorrt import export

    assert export.check_for_tensorrt(_graph("", 13, zero_point=0), "8.2")["op_counts"]["QuantizeLinear"] == 1
    with pytest.raises(EdgecError, match="zero point"):
        export.check_for_tensorrt(_graph("", 13, zero_point=3), "8.2")


def test_every_profile_version_has_an_op_table():
    from edgec import profiles
    from edgec.targets.tensorrt import export

    for p in profiles.all_profiles():
        if p.target == "tensorrt":
            version, table = export._table_for(p.tensorrt["tensorrt"])
            assert p.tensorrt["onnx_opset"] <= table["max_opset"], p.id
            assert {"Conv", "Gemm", "QuantizeLinear", "DequantizeLinear", "Relu", "Add"} <= set(table["supported"])
