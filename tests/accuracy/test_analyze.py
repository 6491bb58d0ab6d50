"""edgec analyze: per-op scales, error and sensitivity; the op ranked most sensitive is, left in
float alone, at least as good as any other single op left in float (checked exhaustively, each
artifact run by a bare LiteRT loop or ONNX Runtime session)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgec.analyze import analyze
from tests.helpers.cli import run_cli
from tests.helpers.litert import litert_accuracy

EPOCHS = 15
SQNR_TOLERANCE_DB = 0.05  # a bare per-sample loop against edgec's batched runner: float ops round alike, nearly


@pytest.fixture(scope="module")
def example_models(digits_dir, digits_split, tmp_path_factory):
    """The digits CNN of the session, and the residual and separable examples (trained on demand)."""
    out = tmp_path_factory.mktemp("archs")
    paths = {"cnn": digits_dir / "digits_cnn.keras"}

    def get(arch):
        if arch not in paths:
            from edgec.examples import make_model, train

            model = make_model(arch)
            assert train(model, digits_split, epochs=EPOCHS) > 0.8
            paths[arch] = out / f"digits_{arch}.keras"
            model.save(paths[arch])
        return paths[arch]

    return get


def _sqnr(reference: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((got.astype(np.float64) - reference) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.sum(reference.astype(np.float64) ** 2)) / noise)


def _check_rows(result):
    assert result["ops"] and result["ranking"] and len(result["ranking"]) == len(result["ops"])
    assert sorted(r["rank"] for r in result["ops"]) == list(range(1, len(result["ops"]) + 1))
    assert [r["index"] for r in result["ops"]] == sorted(r["index"] for r in result["ops"])  # graph order
    weighted = [r for r in result["ops"] if r["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "Conv", "Gemm")]
    assert weighted
    for r in weighted:
        assert r["weight_scale"]["min"] > 0 and r["weight_scale"]["max"] >= r["weight_scale"]["min"]
        assert r["input_scale"] > 0 and r["macs"] > 0 and r["params"] > 0 and r["layers"]
    for r in result["ops"]:
        assert r["sqnr_db"] is None or r["sqnr_db"] > 10
        assert "sensitivity_points" in r and "float_alone" in r
    assert result["totals"]["macs"] == sum(r["macs"] for r in result["ops"])


@pytest.mark.parametrize("arch", ["cnn", pytest.param("residual", marks=pytest.mark.slow),
                                  pytest.param("separable", marks=pytest.mark.slow)])
def test_most_sensitive_op_is_the_best_single_float_op(arch, example_models, digits_dir, digits_split):
    from edgec.accuracy.tflite import TFLiteBackend
    from edgec.calibration import load
    from edgec.model_io import load_model

    path = example_models(arch)
    result = analyze(path, "rpi5", calib=str(digits_dir / "calib.npz"), eval=str(digits_dir / "eval.npz"),
                     remedies=False)
    _check_rows(result)
    assert result["metric"]["kind"] == "accuracy" and result["kind"] == "tflite"
    if arch == "cnn":
        assert [r["layer"] for r in result["ops"] if r["op"] == "CONV_2D"] == ["conv2d", "conv2d_1", "conv2d_2"]
    if arch == "separable":
        assert {"DEPTHWISE_CONV_2D", "CONV_2D", "MEAN", "FULLY_CONNECTED"} <= {r["op"] for r in result["ops"]}
    if arch == "residual":
        assert "ADD" in {r["op"] for r in result["ops"]}

    # every op alone in float, each artifact measured apart from edgec's runner and metric
    model = load_model(path).model
    reference = model.predict(digits_split.x_test, verbose=0)
    backend = TFLiteBackend(model, load(digits_dir / "calib.npz", (8, 8, 1), limit=200))
    assert [o.id for o in backend.ops] == [r["id"] for r in result["ops"]]
    measured = {}
    for op in backend.ops:
        artifact = path.parent / f"{arch}-{op.index}.tflite"
        artifact.write_bytes(backend.build([op.id]))
        acc, logits = litert_accuracy(artifact, digits_split.x_test, digits_split.y_test)
        measured[op.id] = (acc, _sqnr(reference, logits))
    top = result["ranking"][0]
    best_acc = max(a for a, _ in measured.values())
    assert measured[top][0] == best_acc
    assert all(measured[top][1] >= s - SQNR_TOLERANCE_DB for a, s in measured.values() if a == best_acc)
    row = next(r for r in result["ops"] if r["id"] == top)
    plain_acc = result["plain"]["value"]
    assert row["sensitivity_points"] == pytest.approx((measured[top][0] - plain_acc) * 100, abs=1e-3)


def test_tensorrt_analysis_ranks_nodes_of_the_qdq_model(digits_model_path, digits_dir, digits_split):
    pytest.importorskip("tf2onnx", reason="needs the onnx extra: pip install 'edgec[onnx]'")
    import onnxruntime as ort

    from edgec.accuracy import backend_for
    from edgec.calibration import load
    from edgec.model_io import load_model
    from edgec.profiles import get
    from edgec.targets.tensorrt.onnx_io import ORT_EXACT_INT8

    result = analyze(digits_model_path, "jetson-orin-nano", calib=str(digits_dir / "calib.npz"),
                     eval=str(digits_dir / "eval.npz"))
    _check_rows(result)
    assert result["kind"] == "tensorrt"
    assert [r["op"] for r in result["ops"] if r["op"] in ("Conv", "Gemm")] == ["Conv"] * 3 + ["Gemm"] * 2
    assert [r["layer"] for r in result["ops"] if r["op"] in ("Conv", "Gemm")] == \
        ["conv2d", "conv2d_1", "conv2d_2", "dense", "logits"]
    model = load_model(digits_model_path).model
    reference = model.predict(digits_split.x_test, verbose=0)
    backend = backend_for(get("jetson-orin-nano"), model, load(digits_dir / "calib.npz", (8, 8, 1), limit=200))
    measured = {}
    for op in backend.ops:
        options = ort.SessionOptions()
        for key, value in ORT_EXACT_INT8.items():
            options.add_session_config_entry(key, value)
        session = ort.InferenceSession(backend.build([op.id]), options, providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {session.get_inputs()[0].name: digits_split.x_test})
        measured[op.id] = (float((logits.argmax(1) == digits_split.y_test).mean()), _sqnr(reference, logits))
    top = result["ranking"][0]
    best_acc = max(a for a, _ in measured.values())
    assert measured[top][0] == best_acc
    assert all(measured[top][1] >= s - SQNR_TOLERANCE_DB for a, s in measured.values() if a == best_acc)


@pytest.mark.slow
def test_cli_without_labels_measures_agreement_and_plots(outlier_model_path, digits_dir, unlabelled_eval, tmp_path):
    png = tmp_path / "sqnr.png"
    proc = run_cli("analyze", outlier_model_path, "--target", "rpi5", "--calib", digits_dir / "calib.npz",
                   "--eval", unlabelled_eval, "--json", "--plot", png)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["metric"]["kind"] == "agreement" and not result["metric"]["labelled"]
    assert any("no labels" in n for n in result["notes"])
    assert result["plain"]["drop_points"] > 2.0
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # each integer remedy alone, in order of cost: equalization undoes the outlier unit
    rows = {r["label"]: r for r in result["remedies"]["rows"]}
    assert list(rows) == ["plain", "equalize", "bias_correct", "range=percentile", "range=mse", "adaround", "int16"]
    assert rows["plain"]["drop_points"] == pytest.approx(result["plain"]["drop_points"])
    assert rows["equalize"]["drop_points"] < 1.0 < rows["plain"]["drop_points"]
    # the outlier sits in 'dense': keeping its output float (dense and its consumer) recovers the model
    dense = next(r for r in result["ops"] if r["layer"] == "dense")
    assert dense["output_float"]["sensitivity_points"] > 2.0
    assert dense["output_scale"] > 50 * dense["input_scale"]

    text = run_cli("analyze", outlier_model_path, "--target", "rpi5", "--calib", digits_dir / "calib.npz",
                   "--sort", "sensitivity", "--no-remedies")
    assert text.returncode == 0, text.stderr
    assert "most sensitive:" in text.stdout and "no --eval data" in text.stdout


def test_edge_tpu_profile_is_analyzed_with_a_note(digits_model_path, digits_dir):
    result = analyze(digits_model_path, "coral-usb", calib=str(digits_dir / "calib.npz"),
                     eval=str(digits_dir / "eval.npz"), stats=False)
    assert result["kind"] == "tflite" and result["profile"] == "coral-usb"
    assert any("--qat" in n for n in result["notes"])
    assert all(r["rmse_steps"] is None for r in result["ops"])
    # no 16-bit kernels and the converter's own ranges on the Edge TPU: those remedies are not offered
    assert [r["label"] for r in result["remedies"]["rows"]] == ["plain", "equalize", "bias_correct", "adaround"]
