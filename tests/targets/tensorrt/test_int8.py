"""INT8 Q/DQ ONNX for TensorRT from PTQ and from QAT: zero points 0, per-channel weights, accuracy."""

from __future__ import annotations

import numpy as np
import pytest

import edgec
from tests.helpers.tensorrt import accuracy

pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'edgec[onnx]'")
pytest.importorskip("tf2onnx", reason="needs the onnx extra")


def _assert_tensorrt_qdq(model_path):
    """Every zero point 0, int8, every Conv/Gemm with per-channel weights and a quantized input."""
    import onnx

    from edgec.targets.tensorrt import quantize

    model = onnx.load(model_path)
    report = quantize.qdq_report(model)
    assert report["zero_points_all_zero"] and report["qdq_dtypes"] == ["int8"]
    assert report["weights_per_channel"] and all(report["weights_per_channel"].values())
    assert all(report["weighted_inputs_quantized"].values())
    producers = {o: n for n in model.graph.node for o in n.output}
    # TensorRT layout: ReLU stays a node and is not fed by a Q/DQ pair (Conv+ReLU fuse, one requantization).
    relus = [n for n in model.graph.node if n.op_type == "Relu"]
    assert relus and all(producers[r.input[0]].op_type != "DequantizeLinear" for r in relus)
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
    return report


def test_ptq_cnn_build(digits_dir, tmp_path):
    result = edgec.build(digits_dir / "digits_cnn.keras", target="jetson-orin-nano", precision="int8",
                         calib=str(digits_dir / "calib.npz"), eval=str(digits_dir / "eval.npz"), out=tmp_path,
                         max_accuracy_drop=1.0)
    assert result.passed, result.checks
    m = result.manifest
    assert m["tensorrt"]["quantization"]["source"] == "ptq"
    assert m["tensorrt"]["export"]["float_max_abs_diff"] < 1e-4
    assert m["verification"]["runtime"] == "onnxruntime"
    assert abs(m["verification"]["accuracy_drop_points"]) <= 1.0
    _assert_tensorrt_qdq(result.out_dir / "model.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["residual", "separable"])
def test_ptq_symmetric_keeps_accuracy(arch, trained_models, digits_split):
    """The residual (Add) and depthwise-separable (ReLU6 = Clip) models keep their accuracy."""
    from edgec.targets.tensorrt import export, onnx_io, quantize

    model = trained_models[arch]
    pre = quantize.prepare_for_quantization(export.export_onnx(model, 17))
    result = quantize.quantize_qdq(pre, digits_split.x_train[:200])
    float_acc = accuracy(onnx_io.OrtRunner(pre.SerializeToString())(digits_split.x_test), digits_split.y_test)
    int8_acc = accuracy(onnx_io.OrtRunner(result.model.SerializeToString())(digits_split.x_test), digits_split.y_test)
    assert (float_acc - int8_acc) * 100 <= 1.0, (float_acc, int8_acc)
    assert result.report["zero_points_all_zero"] and all(result.report["weights_per_channel"].values())
    if arch == "residual":  # both inputs of every residual Add are quantized (TensorRT fuses Conv+Add)
        producers = {o: n for n in result.model.graph.node for o in n.output}
        adds = [n for n in result.model.graph.node if n.op_type == "Add"]
        assert adds and all(producers[i].op_type == "DequantizeLinear" for a in adds for i in a.input)


@pytest.fixture(scope="module")
def qat_cnn(digits_dir, digits_split, trained_models):
    """The digits CNN fine-tuned 2 epochs with the TensorRT target's QAT scheme."""
    import tensorflow_model_optimization as tfmot

    from edgec import profiles, targets
    from edgec.tfcompat import set_seed, tf_and_keras

    _, keras = tf_and_keras()
    float_model = trained_models["cnn"]
    base = keras.models.clone_model(float_model)
    base.set_weights(float_model.get_weights())
    scheme = targets.get("tensorrt").qat_scheme(profiles.get("jetson-orin-nano"))
    qat = tfmot.quantization.keras.quantize_apply(tfmot.quantization.keras.quantize_annotate_model(base), scheme=scheme)
    set_seed(0)
    qat.compile(optimizer=keras.optimizers.Adam(5e-4),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    qat.fit(digits_split.x_train, digits_split.y_train, epochs=2, batch_size=32, verbose=0)
    return qat


def test_qat_scheme_is_symmetric_and_per_channel(qat_cnn):
    ranges = {}
    for var in qat_cnn.weights:
        name = var.name.split("/")[-1].split(":")[0]
        if name.endswith(("_min", "_max")) and "optimizer_step" not in name:
            ranges.setdefault(var.name.rsplit("_", 1)[0], {})[name.rsplit("_", 1)[1]] = np.asarray(var.numpy())
    activations = {k: v for k, v in ranges.items() if "kernel" not in k}
    kernels = {k: v for k, v in ranges.items() if "kernel" in k}
    assert activations and kernels
    for key, r in activations.items():  # TF fake-quant nudges the zero point to 128 of [0, 255]: int8 zp 0
        scale = (r["max"] - r["min"]) / 255
        assert r["min"] < 0 < r["max"] and round(float(-r["min"] / scale)) == 128, key
    dense = [k for k in kernels if "dense" in k or "logits" in k]
    assert dense and all(kernels[k]["max"].size > 1 for k in dense)  # per output channel on Dense too


@pytest.mark.slow
def test_qat_build_exports_learned_ranges(qat_cnn, trained_models, digits_dir, digits_split, tmp_path):
    from edgec.targets.tensorrt import inspect, onnx_io

    result = edgec.build(qat_cnn, target="jetson-orin-nano", precision="int8", calib=str(digits_dir / "calib.npz"),
                         eval=str(digits_dir / "eval.npz"), out=tmp_path)
    q = result.manifest["tensorrt"]["quantization"]
    assert q["source"] == "qat" and q["qat_ranges"] > 0
    assert q["qat_ranges_mapped"] == q["qat_ranges"] and not q["asymmetric_ranges_widened"]
    assert q["overridden_tensors"] >= q["qat_ranges"]
    assert result.manifest["tensorrt"]["export"]["from_qat_model"] is True
    _assert_tensorrt_qdq(result.out_dir / "model.onnx")
    # the int8 ONNX computes what the QAT model learned (its fake-quant accuracy), and stays near float
    float_acc = accuracy([np.asarray(trained_models["cnn"](digits_split.x_test))], digits_split.y_test)
    learned_acc = accuracy([np.asarray(qat_cnn(digits_split.x_test, training=False))], digits_split.y_test)
    qat_acc = accuracy(onnx_io.OrtRunner(result.out_dir / "model.onnx")(digits_split.x_test), digits_split.y_test)
    assert abs(learned_acc - qat_acc) * 100 <= 0.6, (learned_acc, qat_acc)
    assert (float_acc - qat_acc) * 100 <= 2.0, (float_acc, qat_acc)
    # the exported activation scales are the QAT ones: max / 127 of a learned symmetric range
    report = inspect.inspect_onnx(result.out_dir / "model.onnx")
    by_layer: dict[str, dict[str, float]] = {}
    for v in qat_cnn.weights:
        tail = v.name.split("/")[-1].split(":")[0]
        if tail in ("output_min", "output_max", "post_activation_min", "post_activation_max"):
            by_layer.setdefault(v.name.split("/")[0], {})[tail.rsplit("_", 1)[1]] = float(v.numpy())
    learned = {round((r["max"] - r["min"]) / 255, 6) for r in by_layer.values()}
    exported = {round(r["scale"], 6) for r in report["qdq"] if r["kind"] == "activation"}
    assert len(exported & learned) >= 3
