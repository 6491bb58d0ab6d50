"""edgec build with compression, end to end: real fine-tuning, real int8 conversion, and every
claim checked on the artifact itself (edgec.inspection reads the .tflite flatbuffer)."""

from __future__ import annotations

import json

import pytest

from edgec.inspection import inspect_tflite
from tests.helpers.optimize import artifact_report, kernel_rows


@pytest.fixture(scope="module")
def pqat(arch_paths, build_with):
    """digits CNN, --prune 0.8 --qat, int8 without --calib; 6 epochs: 3 ramping up, 3 recovering."""
    return build_with(arch_paths["cnn"], prune=0.8, qat=True, epochs=6)


@pytest.fixture(scope="module")
def cqat(arch_paths, build_with, digits_dir):
    """digits CNN, --cluster 16 --qat, int8 calibrated on --calib."""
    return build_with(arch_paths["cnn"], cluster=16, qat=True, calib=str(digits_dir / "calib.npz"), epochs=2)


@pytest.mark.slow
def test_prune_qat_keeps_sparsity_in_the_int8_artifact(pqat):
    report = artifact_report(pqat)
    rows = kernel_rows(report)
    assert {r["op"] for r in rows} == {"CONV_2D", "FULLY_CONNECTED"}
    assert all(r["weight_dtype"] == "int8" for r in rows)
    first, *rest = rows  # the first convolution (144 weights) stays dense: 0.5 % of the prunable weights
    assert first["weight_shape"] == [16, 3, 3, 1] and first["zero_share"] < 0.05
    for r in rest:
        assert r["zero_share"] >= 0.78, r
    assert report["totals"]["kernel_zero_share"] >= 0.78
    assert report["totals"]["saturated_bias"] == 0
    o = pqat.manifest["optimization"]
    assert o["totals"]["kernel_zero_share"] == report["totals"]["kernel_zero_share"]
    assert o["totals"]["artifact_bytes"] == report["totals"]["file_bytes"]
    assert o["totals"]["zstd_bytes"] == report["totals"]["zstd_bytes"]
    assert o["totals"]["compression_rate"]["zstd"] >= 8.0
    assert o["float_tflite"]["bytes"] == o["totals"]["float_tflite_bytes"] > 3 * o["totals"]["artifact_bytes"]


@pytest.mark.slow
def test_prune_qat_report_table_and_accuracy_chain(pqat):
    m = pqat.manifest
    o = m["optimization"]
    assert o["steps"] == ["prune", "qat"] and o["prune"]["schedule"] == "polynomial"
    assert [e["stage"] for e in o["accuracy"]] == ["float", "prune", "qat", "artifact (int8)"]
    v = m["verification"]
    assert o["accuracy"][0]["accuracy"] == pytest.approx(v["float_accuracy"], abs=1e-6)
    assert o["accuracy"][-1]["accuracy"] == pytest.approx(v["artifact_accuracy"], abs=1e-6)
    # the Keras QAT model and its int8 artifact agree (activation ranges and emptied channels handled)
    assert abs(o["accuracy"][-1]["accuracy"] - o["accuracy"][-2]["accuracy"]) <= 0.005
    assert v["accuracy_drop_points"] < 6.0, "few epochs: the accuracy criteria are measured in bench/"
    qat = o["step_details"][2]
    assert qat["scheme"] == "Default8BitPrunePreserveQuantizeScheme" and qat["preserves"] == "sparsity preserving"
    layers = {r["layer"]: r for r in o["layers"]}
    assert set(layers) == {"conv2d", "conv2d_1", "conv2d_2", "dense", "logits"}
    prune = o["step_details"][1]
    assert [e["layer"] for e in prune["layers"] if not e["pruned"]] == ["conv2d"]
    for name, r in layers.items():
        assert r["kept_share"] == (pytest.approx(0.2, abs=0.02) if name != "conv2d" else pytest.approx(1.0, abs=0.05))
        assert r["bits"] == 8 and r["bytes"] >= r["params"] and 0 < r["zstd_bits"] < (8 if name != "conv2d" else 9)
    assert sum(r["params"] for r in layers.values()) == o["totals"]["kernel_params"]
    assert "fine-tune inputs; --qat without --calib" in m["data"]["calib"]["source"]
    assert o["representative_data"] == m["data"]["calib"]["source"]
    on_disk = json.loads((pqat.out_dir / "manifest.json").read_text())
    assert on_disk["optimization"]["totals"] == o["totals"]
    assert m["options"]["prune"] == 0.8 and m["options"]["qat"] is True


@pytest.mark.slow
def test_inspect_reads_sparsity_and_clusters_from_the_artifact(pqat, cqat, cli_runner):
    code, out, _ = cli_runner("inspect", pqat.out_dir / "model.tflite")
    assert code == 0
    zeros = artifact_report(pqat)["totals"]["kernel_zero_share"] * 100
    assert f"kernel zeros {zeros:.1f} %" in out
    code, out, _ = cli_runner("inspect", cqat.out_dir / "model.tflite", "--json")
    data = json.loads(out)
    assert data["totals"]["max_unique_per_channel"] <= 16
    assert all(r["sparsity_2_4"] is not None for r in data["ops"] if r["op"] == "CONV_2D")


@pytest.mark.slow
def test_cluster_qat_keeps_16_values_per_kernel(cqat, digits_dir):
    rows = kernel_rows(artifact_report(cqat))
    assert {r["op"] for r in rows} == {"CONV_2D", "FULLY_CONNECTED"}
    for r in rows:  # one int8 scale per clustered kernel: the 16 shared values are 16 int8 values
        assert r["unique_values_tensor"] <= 16, r
        assert r["weight_scales"] == 1, r
    o = cqat.manifest["optimization"]
    assert o["step_details"][2]["scheme"].startswith("Default8BitClusterPreserveQuantizeScheme")
    assert o["totals"]["max_unique_per_channel"] <= 16
    chain = o["accuracy"]
    assert abs(chain[-1]["accuracy"] - chain[-2]["accuracy"]) <= 0.005, "Keras QAT and artifact agree"
    assert cqat.manifest["data"]["calib"]["source"] == str(digits_dir / "calib.npz")
    assert "representative_data" not in o


@pytest.mark.slow
def test_prune_cluster_qat_with_distillation_on_residual(arch_paths, build_with):
    r = build_with(arch_paths["residual"], prune=0.5, cluster=8, qat=True, distill=True, epochs=2)
    o = r.manifest["optimization"]
    assert o["steps"] == ["prune", "cluster", "qat"] and o["distill"] == {"temperature": 4.0, "weight": 0.5}
    assert o["step_details"][3]["preserves"] == "cluster and sparsity preserving"
    report = artifact_report(r)
    assert report["op_counts"].get("ADD") == 2
    assert o["step_details"][2]["folded_batchnorm"] == [f"batch_normalization{s}" for s in ("", "_1", "_2", "_3", "_4")]
    assert "BATCH_NORMALIZATION" not in report["op_counts"]
    dense = {e["layer"]: e["reason"] for e in o["step_details"][1]["layers"] if not e["pruned"]}
    first = o["layers"][0]
    assert list(dense) == [first["layer"]] and "left dense" in dense[first["layer"]]  # 288 weights: under 1 %
    for row in o["layers"][1:]:
        assert row["zero_share"] >= 0.45, row
    for row in kernel_rows(report, ops=("CONV_2D", "FULLY_CONNECTED")):
        assert row["unique_values_tensor"] <= 8, row  # BatchNormalization folded before clustering
    assert r.manifest["verification"]["artifact_accuracy"] > 0.5


@pytest.mark.slow
def test_2_4_qat_on_separable(arch_paths, build_with):
    r = build_with(arch_paths["separable"], prune_structure="2:4", qat=True, epochs=2)
    report = artifact_report(r)
    assert report["op_counts"]["DEPTHWISE_CONV_2D"] == 4
    o = r.manifest["optimization"]
    prune = o["step_details"][1]
    left = {e["layer"]: e["reason"] for e in prune["layers"] if not e["pruned"]}
    small = {name for name, reason in left.items() if "left dense" in reason}
    # under 1 % of the prunable weights: the first convolution (144) and the first pointwise one (1,024)
    assert len(small) == 2
    for row in o["layers"]:
        if row["op"] in ("CONV_2D", "FULLY_CONNECTED"):
            if row["layer"] in small:
                assert row["zero_share"] < 0.05, row
            else:
                assert row["sparsity_2_4"] == 1.0, row
    depthwise = {name: reason for name, reason in left.items() if name.startswith("depthwise_conv2d")}
    assert len(depthwise) == 4
    assert all("2:4 pruning applies to Conv2D and Dense kernels" in reason for reason in depthwise.values())


@pytest.mark.slow
def test_cli_flags_and_printed_tables(arch_paths, digits_dir, cli_runner, tmp_path):
    code, out, err = cli_runner(
        "build", arch_paths["cnn"], "--target", "x86-cpu", "--precision", "fp32", "--fine-tune",
        digits_dir / "train.npz", "--eval", digits_dir / "eval.npz", "--prune", "0.5", "--prune-schedule",
        "constant", "--epochs", "1", "--batch-size", "64", "--lr", "0.002", "--out", tmp_path)
    assert code == 0, err
    assert "compression: prune" in out and "per layer, read from model.tflite" in out
    assert "index bits" in out and "zstd bits" in out and "compression vs float .tflite" in out
    m = json.loads((tmp_path / "x86-cpu" / "manifest.json").read_text())
    assert m["options"]["prune_schedule"] == "constant" and m["options"]["batch_size"] == 64
    assert m["options"]["lr"] == 0.002 and m["options"]["epochs"] == 1
    first, *rows = kernel_rows(inspect_tflite(tmp_path / "x86-cpu" / "model.tflite"))
    assert first["weight_shape"] == [16, 3, 3, 1] and first["zero_share"] == 0.0  # left dense, and said so
    assert "conv2d: 144 weights" in out and "left dense" in out
    assert all(r["weight_dtype"] == "float32" and r["zero_share"] == pytest.approx(0.5, abs=0.01) for r in rows)


@pytest.fixture(scope="session")
def separable_conv(digits_split, tmp_path_factory):
    """A digits net of SeparableConv2D layers: each holds two kernels (depthwise, pointwise)."""
    from edgec.examples import train
    from edgec.tfcompat import set_seed, tf_and_keras

    _, keras = tf_and_keras()
    set_seed(0)
    layers = keras.layers
    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    x = layers.SeparableConv2D(64, 3, padding="same", activation="relu", name="sep_a")(x)
    x = layers.SeparableConv2D(96, 3, padding="same", activation="relu", name="sep_b")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, layers.Dense(10, name="logits")(x), name="digits_sepconv")
    train(model, digits_split, epochs=8, seed=0)
    path = tmp_path_factory.mktemp("sepconv") / "sepconv.keras"
    model.save(path)
    return path


@pytest.mark.slow
def test_separable_conv_prune_qat_keeps_every_pruned_kernel(separable_conv, build_with):
    """SeparableConv2D: TF-MOT prunes the pointwise kernel; QAT splits the layer in two, and the
    pointwise kernel's zeros survive into the artifact. Each kernel has its own row."""
    result = build_with(separable_conv, prune=0.5, prune_schedule="constant", qat=True)
    o = result.manifest["optimization"]
    prune = next(s for s in o["step_details"] if s["step"] == "prune")
    for name in ("sep_a", "sep_b"):
        entry = next(e for e in prune["layers"] if e["layer"] == name)
        rows = {r["kernel"]: r for r in entry["kernel_rows"]}
        assert entry["kernels"] == ["pointwise_kernel"]
        assert rows["pointwise_kernel"]["zero_share"] == pytest.approx(0.5, abs=0.01)
        assert rows["depthwise_kernel"]["zero_share"] == 0.0
        assert entry["zero_share"] == pytest.approx(0.5, abs=0.01), "the step reports the kernel it pruned"
    rows = {r["layer"]: r for r in o["layers"]}
    for name in ("sep_a", "sep_b"):
        pointwise = rows[f"{name} (pointwise_kernel)"]
        assert pointwise["op"] == "CONV_2D" and pointwise["zero_share"] >= 0.49, pointwise
        assert rows[f"{name} (depthwise_kernel)"]["op"] == "DEPTHWISE_CONV_2D"
    qat = next(s for s in o["step_details"] if s["step"] == "qat")
    assert qat["kernels_kept_by_callback"] >= 2
