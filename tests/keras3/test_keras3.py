"""Keras 3 files in edgec: Keras 3's own export without compression steps, the bridge into tf-keras
with them, on every target kind."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers.keras3 import CUSTOM_LAYERS


def _manifest(out, profile):
    return json.loads((out / profile / "manifest.json").read_text())


def test_keras3_file_builds_every_target_kind_through_export(keras3_dir, tmp_path, cli_runner):
    data = keras3_dir / "data.npz"
    code, _, err = cli_runner("build", keras3_dir / "functional.keras", "--target", "rpi5", "--target", "coral-usb",
                              "--target", "jetson-orin-nano", "--precision", "int8", "--calib", data,
                              "--calib-samples", "16", "--eval", data, "--out", tmp_path)
    assert code == 0, err
    for profile in ("rpi5", "coral-usb", "jetson-orin-nano"):
        m = _manifest(tmp_path, profile)
        keras = m["source"]["keras"]
        assert keras["path"] == "export" and keras["version"].startswith("3") and keras["backend"] == "tensorflow"
        assert [o["name"] for o in m["source"]["outputs"]] == ["logits"]
        assert m["verification"]["outputs"][0]["name"] == "logits"
    # a float build checks the artifact against Keras 3's own numbers
    assert _manifest(tmp_path, "rpi5")["verification"]["outputs"][0]["sqnr_db"] > 15


@pytest.mark.parametrize("name,profile,precision", [("functional.h5", "jetson-orin-nano", "fp16"),
                                                    ("sequential.keras", "rpi5", "fp32")])
def test_keras3_h5_and_sequential_float_builds(keras3_dir, tmp_path, cli_runner, name, profile, precision):
    data = keras3_dir / "data.npz"
    code, _, err = cli_runner("build", keras3_dir / name, "--target", profile, "--precision", precision,
                              "--eval", data, "--out", tmp_path)
    assert code == 0, err
    m = _manifest(tmp_path, profile)
    assert m["source"]["keras"]["path"] == "export"
    assert m["verification"]["outputs"][0]["relative_max_abs_error"] < 1e-2
    if name.endswith(".h5"):
        assert m["source"]["keras"]["saved_backend"] == "tensorflow"


def test_keras3_file_with_compression_goes_through_the_bridge(keras3_dir, tmp_path, cli_runner):
    data = keras3_dir / "data.npz"
    code, _, err = cli_runner("build", keras3_dir / "functional.keras", "--target", "rpi5", "--precision", "int8",
                              "--prune", "0.5", "--qat", "--fine-tune", data, "--epochs", "1", "--eval", data,
                              "--out", tmp_path)
    assert code == 0, err
    m = _manifest(tmp_path, "rpi5")
    keras = m["source"]["keras"]
    assert keras["path"] == "bridge"
    assert keras["bridge"]["samples"] > 0 and keras["bridge"]["max_abs_diff"] <= 1e-5
    assert [s["step"] for s in m["optimization"]["step_details"]] == ["float", "prune", "qat"]


@pytest.mark.parametrize("name", ["functional.keras", "functional.h5", "sequential.keras", "custom.keras",
                                  "nested.keras"])
def test_bridge_computes_the_same_function(keras3_dir, name):
    from edgec.keras3 import bridge, output_names
    from edgec.model_io import load_model, output_specs

    loaded = bridge.to_tf_keras(load_model(keras3_dir / name, keras_layers=True, custom_objects=[str(CUSTOM_LAYERS)]))
    assert type(loaded.model).__module__.startswith("tf_keras")
    assert type(loaded.model).__name__ == "Functional"  # Sequential becomes functional
    assert [o.name for o in output_specs(loaded.model)] == output_names(loaded.keras3_model)
    x = np.load(keras3_dir / "data.npz")["x"][:16]
    record = bridge.check(loaded, x)
    print(f"bridge max abs diff {name}: {record['max_abs_diff']:.3g}")
    assert record["max_abs_diff"] <= 1e-5 * max(1.0, record["outputs"][next(iter(record["outputs"]))]["max_abs_output"])
    # the weights are copies: training the rebuild leaves the Keras 3 model as it was
    before = [w.copy() for w in loaded.keras3_model.get_weights()]
    loaded.model.layers[1].set_weights([w + 1 for w in loaded.model.layers[1].get_weights()])
    assert all(np.array_equal(a, b) for a, b in zip(before, loaded.keras3_model.get_weights(), strict=True))


def test_a_keras3_layer_without_a_tf_keras_twin_is_named(keras3_dir, tmp_path, cli_runner):
    data = keras3_dir / "data.npz"
    args = ("build", keras3_dir / "keras3_only.keras", "--target", "rpi5", "--precision", "int8",
            "--custom-objects", CUSTOM_LAYERS, "--out", tmp_path)
    code, _, err = cli_runner(*args, "--prune", "0.5", "--qat", "--fine-tune", data, "--epochs", "1")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err
    assert "'twice'" in lines[-1] and "edgec_test>Twice" in lines[-1] and "no tf-keras counterpart" in lines[-1]
    assert not (tmp_path / "rpi5").exists()
    # without compression steps Keras 3's export needs no twin
    code, _, err = cli_runner(*args, "--calib", data, "--calib-samples", "8")
    assert code == 0, err


def test_keras3_custom_layer_needs_its_module(keras3_dir, tmp_path, cli_runner):
    code, _, err = cli_runner("build", keras3_dir / "unlisted.keras", "--target", "rpi5", "--precision", "fp32",
                              "--out", tmp_path)
    assert code == 2 and "Traceback" not in err
    assert "'Unlisted' (registered as 'edgec_test>Unlisted')" in err and "--custom-objects" in err


def test_keras3_file_in_analyze(keras3_dir, cli_runner):
    data = keras3_dir / "data.npz"
    code, out, err = cli_runner("analyze", keras3_dir / "functional.keras", "--target", "rpi5", "--calib", data,
                                "--calib-samples", "8", "--eval", data, "--json")
    assert code == 0, err
    assert json.loads(out)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["MobileNetV2", "MobileNetV3Small", "EfficientNetB0", "ResNet50"])
def test_bridge_on_keras3_applications(keras3_apps_dir, name):
    from edgec.keras3 import bridge
    from edgec.model_io import load_model

    loaded = bridge.to_tf_keras(load_model(keras3_apps_dir / f"{name}.keras", keras_layers=True))
    x = np.load(keras3_apps_dir / "data32.npz")["x"]
    record = bridge.check(loaded, x)
    out = record["outputs"]["predictions"]
    print(f"bridge max abs diff {name}: {out['max_abs_diff']:.3g} (outputs up to {out['max_abs_output']:.3g})")
    assert out["max_abs_output"] > 1e-3  # BatchNorm statistics from data: outputs are not all near 0
    assert out["max_abs_diff"] <= out["tolerance"]


def test_keras3_file_with_weight_remedies_goes_through_the_bridge(keras3_dir, tmp_path, cli_runner):
    """--equalize rewrites tf-keras layers: a Keras 3 file is rebuilt (and checked) first."""
    data = keras3_dir / "data.npz"
    code, _, err = cli_runner("build", keras3_dir / "functional.keras", "--target", "rpi5", "--precision", "int8",
                              "--calib", data, "--calib-samples", "16", "--equalize", "--out", tmp_path / "o")
    assert code == 0, err
    manifest = json.loads((tmp_path / "o" / "rpi5" / "manifest.json").read_text())
    assert manifest["source"]["keras"]["path"] == "bridge", manifest["source"]["keras"]
    assert manifest["remedies"]["applied"] == ["equalize"], manifest.get("remedies")
