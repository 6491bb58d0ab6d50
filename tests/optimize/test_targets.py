"""Compression for the other target kinds: the QAT scheme comes from the target, and a QAT build
ranges what QAT did not learn on its fine-tune inputs whatever the target (no --calib needed)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgec.errors import EdgecError


@pytest.mark.slow
def test_qat_for_tensorrt_trains_symmetric_ranges_without_calib(arch_paths, build_with):
    """--prune --qat for a Jetson: TensorRT's symmetric scheme, learned ranges exported as is
    (none widened), the zeros kept in the ONNX weights, representative data from fine-tuning."""
    result = build_with(arch_paths["cnn"], target="jetson-orin-nano", prune=0.5, qat=True, epochs=2)
    m = result.manifest
    qat = m["optimization"]["step_details"][-1]
    assert qat["step"] == "qat" and qat["scheme"] == "TensorRTQuantizeScheme"
    assert "fine-tune inputs" in m["optimization"]["representative_data"]
    q = m["tensorrt"]["quantization"]
    assert q["source"] == "qat" and q["qat_ranges"] > 0
    assert q["asymmetric_ranges_widened"] == [], q["asymmetric_ranges_widened"]
    assert q["zero_points_all_zero"] is True
    model = onnx.load(str(result.out_dir / "model.onnx"))
    quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    kernels = [onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name in quantized
               and len(t.dims) >= 2]
    assert len(kernels) == 5, "every Conv/Dense kernel goes through Q/DQ"
    zeros = float(np.mean(np.concatenate([k.ravel() == 0 for k in kernels])))
    assert zeros >= 0.45, zeros
    assert m["verification"]["accuracy_drop_points"] < 6.0


@pytest.mark.slow
def test_qat_for_edgetpu_builds_without_calib(arch_paths, build_with):
    result = build_with(arch_paths["cnn"], target="coral-usb", qat=True, epochs=1)
    m = result.manifest
    assert m["optimization"]["step_details"][-1]["scheme"] == "Default8BitQuantizeScheme"
    assert "fine-tune inputs" in m["optimization"]["representative_data"]
    assert m["verification"]["accuracy_drop_points"] < 6.0


@pytest.mark.parametrize("target", ["jetson-orin-nano", "coral-usb", "rpi5"])
def test_int8_without_calib_or_qat_says_how(arch_paths, build_with, target):
    with pytest.raises(EdgecError, match="--calib DATA.*--qat with --fine-tune DATA"):
        build_with(arch_paths["cnn"], target=target, precision="int8", fine_tune=None)
