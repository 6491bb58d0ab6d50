"""Integer remedies before float ops: cross-layer equalization (the same float function, ReLU6
clips converted), bias correction, activation ranges, learned rounding, 16x8 activations; and
--accuracy-control trying them in order of cost on a SeparableConv2D classifier trained on noisy
labels, inputs in [-1, 1]."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgec
from edgec import tflite_model
from tests.accuracy import separable
from tests.helpers.cli import run_cli
from tests.helpers.litert import litert_accuracy

BUDGET = 1.0


@pytest.fixture(scope="session")
def sep(tmp_path_factory) -> dict:
    return separable.write(tmp_path_factory.mktemp("separable"))


def _opts(sep, **kw):
    return {"target": "rpi5", "precision": "int8", "calib": str(sep["calib"]), "eval": str(sep["eval"]),
            "input_range": "-1,1", **kw}


@pytest.fixture(scope="module")
def plain(sep, tmp_path_factory):
    return edgec.build(sep["inflated"], out=tmp_path_factory.mktemp("plain"), **_opts(sep))


@pytest.fixture(scope="module")
def controlled(sep, tmp_path_factory):
    return edgec.build(sep["inflated"], out=tmp_path_factory.mktemp("ac"), accuracy_control=True,
                       max_accuracy_drop=BUDGET, **_opts(sep))


def _load(path):
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    return keras.models.load_model(path, compile=False)


def test_equalization_computes_the_same_float_function_with_balanced_ranges(sep):
    from edgec.accuracy.remedies.equalize import equalize

    model = _load(sep["inflated"])
    x = np.load(sep["calib"])["x"][:64]
    out, report = equalize(model, x)
    ref = np.abs(model.predict(x, verbose=0)).max()
    assert report["max_abs_diff"] < 1e-4 * ref
    assert np.abs(out.predict(x, verbose=0) - model.predict(x, verbose=0)).max() == pytest.approx(
        report["max_abs_diff"], rel=1e-3, abs=1e-6)
    assert "separable_conv2d_1" in report["separable_layers"]
    assert {"first": "conv2d", "second": "separable_conv2d", "through": ["batch_normalization"]} in report["pairs"]
    dk = out.get_layer("separable_conv2d_1").get_weights()[0]
    ranges = np.abs(dk).max(axis=(0, 1, 3))
    before = np.abs(model.get_layer("separable_conv2d_1").get_weights()[0]).max(axis=(0, 1, 3))
    assert before[0] / np.median(before) > 30  # the inflated channel
    assert ranges[0] / np.median(ranges) < 10  # brought back among the others


def test_equalization_converts_a_relu6_clip(tmp_path):
    from edgec.accuracy.remedies.equalize import equalize
    from edgec.tfcompat import set_seed, tf_and_keras

    _, keras = tf_and_keras()
    set_seed(0)
    inp = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(8, 3, padding="same", name="first")(inp)
    h = keras.layers.ReLU(6.0, name="clip")(h)
    out = keras.layers.Dense(3, name="second")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    k, b = model.get_layer("first").get_weights()
    k[..., 0] *= 40.0  # one channel far wider, clipped at 6 on most inputs
    model.get_layer("first").set_weights([k, b])
    x = np.random.default_rng(0).uniform(-3, 3, (64, 6, 6, 2)).astype(np.float32)
    pre = keras.Model(inp, model.get_layer("first").output).predict(x, verbose=0)
    assert (pre > 6).mean() > 0.05  # the clip is active on this data
    eq, report = equalize(model, x)
    assert report["clips_converted"] == ["clip"]
    assert report["max_abs_diff"] < 1e-4
    assert np.abs(eq.get_layer("first").get_weights()[0]).max() < np.abs(k).max()


def test_adaround_writes_weights_on_the_int8_grid_that_the_converter_keeps(sep, monkeypatch):
    from edgec.accuracy.remedies import layers as L
    from edgec.accuracy.remedies import weights as wt
    from edgec.calibration import Dataset
    from edgec.config import Precision
    from edgec.targets.tflite import convert

    monkeypatch.setattr(wt, "ADAROUND_STEPS", 80)
    model = _load(sep["model"])
    x = np.load(sep["calib"])["x"][:128]
    out, report = wt.adaround(model, x)
    assert report["off_grid"] == 0 and report["flipped_share"] > 0
    assert all(r["mse_learned"] <= r["mse_nearest"] * 1.05 for r in report["layers"])
    kernel = out.get_layer("logits").get_weights()[0]
    chosen = np.round(kernel / L.step(kernel, "kernel")).astype(np.int8)
    content = convert(out, Precision.INT8, calib=Dataset(x=x, y=None, source="calib", total=len(x)),
                      output_names=["logits"])
    m = tflite_model.load(content)
    fc = next(op for op in m.operators if op.op == "FULLY_CONNECTED")
    stored = m.kernel(fc).data  # (out, in)
    assert np.array_equal(stored, chosen.T)


def test_sequential_bias_correction_removes_the_mean_error_the_int8_weights_pass_on(sep):
    from edgec.accuracy.remedies import layers as L
    from edgec.accuracy.remedies import weights as wt

    model = _load(sep["model"])
    x = np.load(sep["calib"])["x"][:128]

    def int8_weights(m):  # every kernel at its int8 grid, as the converter rounds it
        return wt._copy(m, {layer.name: wt._on_grid(layer, L.weights(layer)) for layer in m.layers
                            if L.supported(layer)})

    ref = model.predict(x, verbose=0).mean(axis=0)
    seq, report = wt.bias_correct(model, x, sequential=True)
    one, _ = wt.bias_correct(model, x)
    assert report["sequential"] and report["skipped"] == []
    err = {name: np.abs(int8_weights(m).predict(x, verbose=0).mean(axis=0) - ref).max()
           for name, m in (("plain", model), ("sequential", seq), ("one layer", one))}
    # the logits' mean on the calibration data is the float model's, up to float rounding
    assert err["sequential"] < 1e-4 * np.abs(ref).max()
    assert err["one layer"] > 10 * err["sequential"] and err["plain"] > 10 * err["sequential"]


def test_a_remedy_that_did_not_help_on_its_turn_is_tried_again_on_top_of_later_ones():
    from types import SimpleNamespace

    from edgec.accuracy.metric import Score
    from edgec.accuracy.remedies import Remedies
    from edgec.accuracy.remedies.control import search

    drops = {Remedies(): 3.0, Remedies(bias_correct=True): 2.0,
             Remedies(bias_correct=True, range="mse"): 2.5,  # worse on its turn
             Remedies(bias_correct=True, adaround=True): 1.5,
             Remedies(bias_correct=True, adaround=True, range="mse"): 0.8}  # better after AdaRound

    class Trials:  # a scripted measurement of each combination (any other: no better than plain)
        def __init__(self):
            self.kept, self.cache, self.order = set(), {}, []

        def __call__(self, r):
            drop = drops.get(r, 3.5)
            self.order.append(r)
            return (Score(1 - drop / 100, drop, 20.0 - drop, {}),)

    ctx = SimpleNamespace(profile=SimpleNamespace(target="tflite"), calib=SimpleNamespace(x=np.zeros((1, 2))),
                          model=None)
    chosen, trials, met = search(ctx, Remedies(), BUDGET, Trials())
    assert met and chosen == Remedies(bias_correct=True, adaround=True, range="mse")
    assert trials.order.index(Remedies(bias_correct=True, range="mse")) < trials.order.index(
        Remedies(bias_correct=True, adaround=True))
    assert Remedies(bias_correct=True, adaround=True, int16=True) not in trials.order  # not needed


def test_control_meets_the_budget_on_integer_remedies(controlled, plain, sep):
    m = controlled.manifest
    ac = m["accuracy_control"]
    before = plain.manifest["verification"]["accuracy_drop_points"]
    assert before > 5.0  # plain int8 of the inflated twin loses many points
    assert controlled.passed and ac["met"]
    assert 1.0 - ac["float_macs_share"] >= 0.9
    tried = ac["remedies"]["tried"]
    assert tried[0]["label"] == "plain" and tried[0]["drop_points"] == pytest.approx(before)
    assert "equalize" in ac["remedies"]["chosen"]
    assert [r["label"] for r in tried][:2] == ["plain", "equalize"]  # in order of cost
    assert all(c["cost_ms"] is not None for c in ac["latency_cost"])
    x, y = np.load(sep["eval"])["x"], np.load(sep["eval"])["y"]
    acc, _ = litert_accuracy(controlled.out_dir / "model.tflite", x, y)
    assert (m["verification"]["float_accuracy"] - acc) * 100 <= BUDGET
    assert m["remedies"]["applied"] == ac["remedies"]["chosen"]
    assert m["remedies"]["equalize"]["max_abs_diff"] < 1e-3
    assert m["artifacts"][0]["float_ops"] == []


def test_flags_apply_alone_and_land_in_the_manifest(sep, plain, tmp_path):
    ranged = edgec.build(sep["inflated"], out=tmp_path / "range", act_range="percentile", **_opts(sep))
    m = ranged.manifest
    assert m["options"]["act_range"] == "percentile"
    assert m["remedies"]["range"]["clipped"] > 0
    scales = lambda r: [t.scale for t in tflite_model.load(r.out_dir / "model.tflite").tensors  # noqa: E731
                        if not t.is_constant and t.dtype == "int8"]
    assert scales(ranged) != scales(plain)
    assert m["verification"]["accuracy_drop_points"] < plain.manifest["verification"]["accuracy_drop_points"]
    wide = edgec.build(sep["model"], out=tmp_path / "int16", int16_activations=True, bias_correct=True, **_opts(sep))
    w = wide.manifest
    assert w["options"]["int16_activations"] and w["remedies"]["applied"] == ["bias_correct", "int16"]
    assert w["remedies"]["bias_correct"]["max_abs_diff"] > 0  # a shift of the float function, on purpose
    dtypes = {t.dtype for t in tflite_model.load(wide.out_dir / "model.tflite").tensors if not t.is_constant}
    assert "int16" in dtypes
    assert next(c for c in w["checks"] if c["name"] == "full_integer")["passed"]


@pytest.mark.parametrize("args, message", [
    (["--target", "coral-usb", "--int16-activations"], "the Edge TPU has no 16-bit kernels"),
    (["--target", "jetson-orin-nano", "--range", "mse"], "TensorRT's Q/DQ scales"),
    (["--target", "rpi5", "--precision", "fp32", "--equalize"], "this build's precision is fp32"),
])
def test_remedies_a_target_cannot_carry_are_refused(sep, tmp_path, args, message):
    proc = run_cli("build", sep["model"], *args, "--calib", sep["calib"], "--out", tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("Error: ") and message in proc.stderr and "Traceback" not in proc.stderr


def test_printout_lists_the_remedies_tried(controlled, capsys):
    from edgec.commands.build import print_summary

    print_summary(controlled)
    out = capsys.readouterr().out
    assert "integer remedies, in order of cost" in out and "equalize" in out
    json.dumps(controlled.manifest)  # JSON-ready


def test_tensorrt_control_tries_the_weight_remedies_first(sep, plain, tmp_path):
    pytest.importorskip("tf2onnx", reason="needs the onnx extra: pip install 'edgec[onnx]'")
    result = edgec.build(sep["inflated"], out=tmp_path, accuracy_control=True, max_accuracy_drop=BUDGET,
                         **{**_opts(sep), "target": "jetson-orin-nano"})
    ac = result.manifest["accuracy_control"]
    assert result.passed and ac["met"] and ac["float_ops"] == []
    tried = ac["remedies"]["tried"]
    assert tried[0]["label"] == "plain" and tried[0]["drop_points"] > 5.0
    assert ac["before"]["drop_points"] == tried[0]["drop_points"]
    assert "equalize" in ac["remedies"]["chosen"] and ac["remedies"]["offered"] == ["equalize", "bias_correct",
                                                                                      "adaround"]
    assert result.manifest["verification"]["accuracy_drop_points"] <= BUDGET
