"""edgec build --accuracy-control on a model whose plain int8 loses points: the budget is met with few
ops in float (the float fallback alone, --no-remedies), measured independently with LiteRT; the
artifact stays int8 everywhere else; ops kept float on purpose are marked as chosen, any other float
op still fails the build. The integer remedies tried first: tests/accuracy/test_remedies.py."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import edgec
from edgec import tflite_model
from edgec.errors import EdgecError
from tests.helpers.cli import run_cli
from tests.helpers.litert import litert_accuracy

BUDGET = 1.0


@pytest.fixture(scope="module")
def plain(outlier_model_path, digits_dir, tmp_path_factory):
    return edgec.build(outlier_model_path, target="rpi5", precision="int8", calib=str(digits_dir / "calib.npz"),
                       eval=str(digits_dir / "eval.npz"), out=tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def controlled(outlier_model_path, digits_dir, tmp_path_factory):
    return edgec.build(outlier_model_path, target="rpi5", precision="int8", calib=str(digits_dir / "calib.npz"),
                       eval=str(digits_dir / "eval.npz"), max_accuracy_drop=BUDGET, accuracy_control=True,
                       remedies=False, out=tmp_path_factory.mktemp("controlled"))


def test_plain_int8_loses_more_than_two_points(plain, digits_split):
    acc, _ = litert_accuracy(plain.out_dir / "model.tflite", digits_split.x_test, digits_split.y_test)
    v = plain.manifest["verification"]
    assert acc == pytest.approx(v["artifact_accuracy"])
    assert (v["float_accuracy"] - acc) * 100 > 2.0
    assert plain.manifest["checks"][-1]["name"] == "full_integer" and plain.manifest["checks"][-1]["passed"]


def test_accuracy_control_meets_the_budget_with_few_macs_in_float(controlled, plain, digits_split):
    m = controlled.manifest
    ac = m["accuracy_control"]
    assert controlled.passed and ac["met"]
    acc, _ = litert_accuracy(controlled.out_dir / "model.tflite", digits_split.x_test, digits_split.y_test)
    float_acc = m["verification"]["float_accuracy"]
    assert (float_acc - acc) * 100 <= BUDGET
    assert acc == pytest.approx(m["verification"]["artifact_accuracy"])
    assert 0 < ac["float_macs_share"] <= 0.15
    assert ac["before"]["drop_points"] == pytest.approx(plain.manifest["verification"]["accuracy_drop_points"])
    assert ac["after"]["drop_points"] == pytest.approx(m["verification"]["accuracy_drop_points"])
    assert ac["before"]["bytes"] == plain.manifest["artifacts"][0]["bytes"]
    assert ac["after"]["bytes"] == m["artifacts"][0]["bytes"]
    assert ac["size_change_bytes"] == ac["after"]["bytes"] - ac["before"]["bytes"]
    layers = [o["layer"] for o in ac["float_ops"]]
    assert "dense" in layers and 0 < len(layers) < ac["quantizable_ops"]
    total_macs = sum(o["macs"] for o in ac["float_ops"]) / ac["float_macs_share"]
    assert total_macs == pytest.approx(603776, rel=0.01)  # the digits CNN's MACs per sample
    # each op kept in float priced in LiteRT latency on this host, and all of them against plain int8
    costs = ac["latency_cost"]
    assert sorted(c["layers"] for c in costs[:-1]) == sorted(layers) and costs[-1]["what"] == "all kept in float"
    assert all(c["ms"] > 0 and c["int8_ms"] > 0 for c in costs)
    assert m["options"]["accuracy_control"] is True


def test_artifact_is_int8_except_the_chosen_ops(controlled):
    m = controlled.manifest
    record = m["artifacts"][0]
    chosen = record["float_ops_chosen"]
    model = tflite_model.load(controlled.out_dir / "model.tflite")
    float_compute = [op for op in model.operators if op.op not in ("QUANTIZE", "DEQUANTIZE")
                     and any(model.tensors[t].dtype == "float32" for t in op.outputs)]
    assert len(float_compute) == len(chosen)
    float_weights = set()
    for op in float_compute:
        float_weights.update(t.index for t in model.weights(op))
    for t in model.tensors:
        if t.is_parameter and t.index not in float_weights:
            assert t.dtype in ("int8", "int32"), f"{t.name} is {t.dtype} outside the chosen ops"
    assert {model.tensors[i].dtype for i in model.inputs} == {"int8"}
    assert {model.tensors[i].dtype for i in model.outputs} == {"int8"}
    assert record["float_ops"] and all(o["chosen"] for o in record["float_ops"])
    check = next(c for c in m["checks"] if c["name"] == "full_integer")
    assert check["passed"] and "on purpose" in check["message"]


def test_an_unchosen_float_op_still_fails(controlled):
    from edgec.accuracy import float_ops, mark_chosen
    from edgec.config import BuildOptions
    from edgec.pipeline import build_checks

    path = controlled.out_dir / "model.tflite"
    record = dict(controlled.manifest["artifacts"][0])
    all_chosen = record["float_ops_chosen"]
    assert len(all_chosen) >= 1
    # as if one of the float ops had not been chosen (an op without an int8 kernel, say)
    partial = all_chosen[1:]
    record["float_ops_chosen"] = partial
    record["float_ops"] = mark_chosen(path, "tflite", float_ops(path, "tflite"), partial)
    unchosen = [o for o in record["float_ops"] if not o.get("chosen")]
    assert unchosen
    (check,) = build_checks(BuildOptions(), None, [record])
    assert not check["passed"] and check["value"] == len(unchosen)
    assert "no int8 kernel" in check["message"]
    (accepted,) = build_checks(BuildOptions(allow_float_ops=True), None, [record])
    assert accepted["passed"]
    # and fully chosen, the same artifact passes
    record["float_ops"] = mark_chosen(path, "tflite", float_ops(path, "tflite"), all_chosen)
    (ok,) = build_checks(BuildOptions(), None, [record])
    assert ok["passed"] and ok["chosen"] == len(record["float_ops"])


def test_plain_int8_of_the_backend_is_the_build_conversion(outlier_model_path, digits_dir, plain):
    """With nothing deny-listed, the selective quantizer gives the build's own int8 model."""
    from edgec.accuracy.tflite import TFLiteBackend
    from edgec.calibration import load
    from edgec.model_io import load_model

    model = load_model(outlier_model_path).model
    calib = load(digits_dir / "calib.npz", (8, 8, 1), limit=200)
    backend = TFLiteBackend(model, calib)
    ours = tflite_model.load(backend.plain)
    theirs = tflite_model.load(plain.out_dir / "model.tflite")
    assert [o.op for o in ours.operators] == [o.op for o in theirs.operators]
    for a, b in zip(ours.tensors, theirs.tensors, strict=True):
        assert (a.name, a.dtype, a.scale, a.zero_point) == (b.name, b.dtype, b.scale, b.zero_point)
        assert (a.data is None) == (b.data is None)
        if a.data is not None:
            assert np.array_equal(a.data, b.data)


def test_same_inputs_same_choice_same_bytes(controlled, outlier_model_path, digits_dir, tmp_path):
    again = edgec.build(outlier_model_path, target="rpi5", precision="int8", calib=str(digits_dir / "calib.npz"),
                        eval=str(digits_dir / "eval.npz"), max_accuracy_drop=BUDGET, accuracy_control=True,
                        remedies=False, out=tmp_path)
    assert again.manifest["artifacts"][0]["sha256"] == controlled.manifest["artifacts"][0]["sha256"]
    assert again.manifest["accuracy_control"]["steps"] == controlled.manifest["accuracy_control"]["steps"]


def test_eval_without_labels_controls_top1_agreement(outlier_model_path, digits_dir, unlabelled_eval, tmp_path,
                                                     digits_split):
    result = edgec.build(outlier_model_path, target="rpi5", precision="int8", calib=str(digits_dir / "calib.npz"),
                         eval=str(unlabelled_eval), max_accuracy_drop=BUDGET, accuracy_control=True, out=tmp_path)
    ac = result.manifest["accuracy_control"]
    assert ac["metric"]["kind"] == "agreement" and not ac["metric"]["labelled"]
    assert ac["before"]["drop_points"] > 2.0 and ac["met"] and result.passed
    check = next(c for c in result.manifest["checks"] if c["name"] == "max_accuracy_drop")
    assert check["metric"] == "agreement" and "no labels" in check["message"]
    # the agreement, measured apart from edgec
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    reference = keras.models.load_model(outlier_model_path, compile=False).predict(digits_split.x_test, verbose=0)
    _, logits = litert_accuracy(result.out_dir / "model.tflite", digits_split.x_test, digits_split.y_test)
    agreement = float((logits.argmax(1) == reference.argmax(1)).mean())
    assert (1 - agreement) * 100 == pytest.approx(ac["after"]["drop_points"], abs=1e-4)  # reported to 4 places
    assert (1 - agreement) * 100 <= BUDGET


@pytest.mark.parametrize("kwargs, message", [
    ({"eval": None}, "--accuracy-control measures the drop on --eval DATA"),
    ({"max_accuracy_drop": None}, "needs the budget it meets"),
    ({"precision": "fp32", "calib": None}, "this build's precision is fp32"),
    ({"qat": True, "fine_tune": "train.npz"}, "use one or the other"),
])
def test_requests_that_cannot_work_are_refused_before_tensorflow(digits_dir, tmp_path, kwargs, message):
    options = {"precision": "int8", "calib": str(digits_dir / "calib.npz"), "eval": str(digits_dir / "eval.npz"),
               "max_accuracy_drop": 1.0, "accuracy_control": True, "out": tmp_path, **kwargs}
    if options.get("fine_tune"):
        options["fine_tune"] = str(digits_dir / options["fine_tune"])
    with pytest.raises(EdgecError, match=re.escape(message)):
        edgec.build(digits_dir / "digits_cnn.keras", target="rpi5", **{k: v for k, v in options.items() if v is not None})
    assert not (tmp_path / "rpi5").exists()


def test_edge_tpu_refuses_accuracy_control(digits_dir, tmp_path):
    proc = run_cli("build", digits_dir / "digits_cnn.keras", "--target", "coral-usb", "--calib", digits_dir / "calib.npz",
                   "--eval", digits_dir / "eval.npz", "--max-accuracy-drop", "1", "--accuracy-control", "--out", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: ") and "leaves the Edge TPU" in proc.stderr and "--qat" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "coral-usb").exists()


@pytest.mark.slow
def test_unreachable_budget_exits_1_with_the_best_found(digits_dir, tmp_path):
    """An int8 output cannot hold logits next to a class pinned at -10,000: no op kept in float helps,
    so the loop goes to all ops but one in float and the build fails with the best it found."""
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    model = keras.models.load_model(digits_dir / "digits_cnn.keras", compile=False)
    kernel, bias = model.get_layer("logits").get_weights()
    wide = keras.layers.Dense(11, name="logits_pinned")
    out = wide(model.get_layer("dense").output)
    pinned = keras.Model(model.inputs, out, name="digits_pinned")
    wide.set_weights([np.concatenate([kernel, np.zeros((kernel.shape[0], 1), np.float32)], axis=1),
                      np.concatenate([bias, [-1e4]]).astype(np.float32)])
    path = tmp_path / "pinned.keras"
    pinned.save(path)
    proc = run_cli("build", path, "--target", "rpi5", "--precision", "int8", "--calib", digits_dir / "calib.npz",
                   "--eval", digits_dir / "eval.npz", "--max-accuracy-drop", "1", "--accuracy-control", "--no-remedies", "--json",
                   "--out", tmp_path / "dist")
    assert proc.returncode == 1, proc.stderr
    m = json.loads(proc.stdout)
    ac = m["accuracy_control"]
    assert not ac["met"] and ac["after"]["drop_points"] > 1.0
    assert ac["after"]["drop_points"] <= ac["before"]["drop_points"]
    assert max(s["float_ops"] for s in ac["steps"]) == ac["quantizable_ops"] - 1  # all float but one was tried
    assert (tmp_path / "dist" / "rpi5" / "model.tflite").is_file()
    assert "exceeds --max-accuracy-drop" in proc.stderr


def test_tensorrt_leaves_qdq_out_around_the_chosen_nodes(outlier_model_path, digits_dir, digits_split, tmp_path):
    pytest.importorskip("tf2onnx", reason="needs the onnx extra: pip install 'edgec[onnx]'")
    import onnx
    import onnxruntime as ort

    from edgec.targets.tensorrt.onnx_io import ORT_EXACT_INT8
    from edgec.targets.tensorrt.quantize import WEIGHTED_OPS, unquantized_ops

    result = edgec.build(outlier_model_path, target="jetson-orin-nano", precision="int8",
                         calib=str(digits_dir / "calib.npz"), eval=str(digits_dir / "eval.npz"),
                         max_accuracy_drop=BUDGET, accuracy_control=True, remedies=False, out=tmp_path)
    ac = result.manifest["accuracy_control"]
    assert result.passed and ac["met"] and ac["before"]["drop_points"] > 2.0
    assert 0 < ac["float_macs_share"] <= 0.15
    path = result.out_dir / "model.onnx"
    chosen = {o["id"] for o in ac["float_ops"]}
    model = onnx.load(path)
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        dequantized = [producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in node.input[:2]]
        assert (not any(dequantized)) if node.name in chosen else all(dequantized), node.name
    assert {o["node"] for o in unquantized_ops(path)} == {n for n in chosen if any(
        n == node.name and node.op_type in WEIGHTED_OPS for node in model.graph.node)}
    record = result.manifest["artifacts"][0]
    assert all(o["chosen"] for o in record["float_ops"])
    spec = json.loads((result.out_dir / "build.json").read_text())
    assert "--int8" in spec["trtexec"]
    # measured apart from edgec: ONNX Runtime with exact int8 accumulation, as TensorRT computes
    options = ort.SessionOptions()
    for key, value in ORT_EXACT_INT8.items():
        options.add_session_config_entry(key, value)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: digits_split.x_test})
    acc = float((logits.argmax(1) == digits_split.y_test).mean())
    assert (result.manifest["verification"]["float_accuracy"] - acc) * 100 <= BUDGET


def test_a_model_within_budget_gets_the_plain_artifact(digits_model_path, digits_dir, tmp_path):
    options = {"precision": "int8", "calib": str(digits_dir / "calib.npz"), "eval": str(digits_dir / "eval.npz"),
               "max_accuracy_drop": BUDGET}
    plain = edgec.build(digits_model_path, target="rpi5", out=tmp_path / "plain", **options)
    controlled = edgec.build(digits_model_path, target="rpi5", out=tmp_path / "ac", accuracy_control=True, **options)
    ac = controlled.manifest["accuracy_control"]
    assert ac["met"] and ac["float_ops"] == [] and ac["steps"] == [] and ac["evaluations"] == 1
    assert controlled.manifest["artifacts"][0]["sha256"] == plain.manifest["artifacts"][0]["sha256"]
    assert controlled.manifest["artifacts"][0]["float_ops"] == []


def test_printout_says_it_in_one_table(controlled, capsys):
    from edgec.commands.build import print_summary

    print_summary(controlled)
    out = capsys.readouterr().out
    ac = controlled.manifest["accuracy_control"]
    n = len(ac["float_ops"])
    assert f"accuracy control: {n} of {ac['quantizable_ops']} ops kept in float" in out
    assert f"drop {ac['before']['drop_points']:.2f} -> {ac['after']['drop_points']:.2f} points" in out
    assert "total in float" in out and f"({ac['float_macs_share'] * 100:.1f} %)" in out
    assert "dense" in out and "plain int8 ->" in out
    assert "float ops in model.tflite" not in out  # the chosen ops are not listed as float-op errors
    assert "PASS model.tflite is int8 but for the" in out
