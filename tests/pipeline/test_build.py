"""edgec build on the digits CNN: real conversions, real LiteRT inference, manifests, atomicity."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgec
from edgec import manifest as manifest_mod
from edgec.util import sha256_file


@pytest.fixture(scope="module")
def int8_build(digits_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    return edgec.build(digits_dir / "digits_cnn.keras", target="rpi5", precision="int8",
                       calib=str(digits_dir / "calib.npz"), eval=str(digits_dir / "eval.npz"),
                       max_accuracy_drop=1.0, out=out)


def test_int8_build_is_verified_and_recorded(int8_build, digits_dir):
    m = int8_build.manifest
    d = int8_build.out_dir
    assert d.name == "rpi5" and (d / "model.tflite").is_file() and (d / "manifest.json").is_file()
    assert json.loads((d / "manifest.json").read_text()) == json.loads(json.dumps(m))
    art = m["artifacts"][0]
    assert art["sha256"] == sha256_file(d / "model.tflite")
    assert art["bytes"] == (d / "model.tflite").stat().st_size
    assert m["source"]["sha256"] == sha256_file(digits_dir / "digits_cnn.keras")
    assert m["precision"] == "int8" and m["options"]["calib_samples"] == 200 and m["options"]["seed"] == 0
    assert m["data"]["calib"]["samples"] == 200
    for key in ("tensorflow", "tf-keras", "ai-edge-litert", "numpy", "python"):
        assert m["versions"][key]
    (inp,), (out,) = art["inputs"], art["outputs"]
    assert inp["dtype"] == "int8" and out["dtype"] == "int8"
    assert inp["shape"][1:] == [8, 8, 1] and out["shape"][1:] == [10]
    assert inp["quantization"]["scale"] == pytest.approx(1 / 255, rel=1e-3)
    assert inp["quantization"]["zero_point"] == -128
    assert art["op_counts"]["CONV_2D"] == 3 and art["op_counts"]["FULLY_CONNECTED"] == 2
    assert art["weight_dtypes"] == ["int32", "int8"]
    v = m["verification"]
    assert v["samples"] == 540 and v["runtime"] == "litert"
    assert v["float_accuracy"] > 0.9
    assert abs(v["accuracy_drop_points"]) <= 1.0
    assert v["agreement"] > 0.97
    assert int8_build.passed and m["checks"][0]["name"] == "max_accuracy_drop"


def test_int8_accuracy_matches_independent_litert_run(int8_build, digits_split):
    """Re-run the artifact with a bare LiteRT loop: the manifest's accuracy is the real one."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(int8_build.out_dir / "model.tflite"))
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    scale, zero = i["quantization"]
    correct = 0
    for x, y in zip(digits_split.x_test, digits_split.y_test, strict=True):
        it.set_tensor(i["index"], np.clip(np.round(x[None] / scale + zero), -128, 127).astype(np.int8))
        it.invoke()
        correct += int(it.get_tensor(o["index"])[0].argmax() == y)
    assert correct / len(digits_split.y_test) == pytest.approx(int8_build.manifest["verification"]["artifact_accuracy"])


def test_same_seed_same_artifact(int8_build, digits_dir, tmp_path):
    again = edgec.build(digits_dir / "digits_cnn.keras", target="rpi5", precision="int8",
                        calib=str(digits_dir / "calib.npz"), out=tmp_path)
    assert again.manifest["artifacts"][0]["sha256"] == int8_build.manifest["artifacts"][0]["sha256"]
    assert again.manifest["verification"] is None


@pytest.mark.parametrize("precision, max_diff, weight_dtype", [
    ("fp32", 1e-4, "float32"), ("fp16", 5e-2, "float16"), ("dynamic", 1.0, "int8"),
])
def test_float_precisions(digits_dir, tmp_path, precision, max_diff, weight_dtype):
    r = edgec.build(digits_dir / "digits_cnn.keras", target="x86-cpu", precision=precision,
                    eval=str(digits_dir / "eval.npz"), out=tmp_path)
    art = r.manifest["artifacts"][0]
    assert art["inputs"][0]["dtype"] == "float32"
    assert weight_dtype in art["weight_dtypes"]
    v = r.verification
    assert v["max_abs_diff"] < max_diff, v
    assert abs(v["accuracy_drop_points"]) <= 1.0


def test_default_precision_is_profile_default(digits_dir, tmp_path):
    r = edgec.build(digits_dir / "digits_cnn.keras", target="rpi4", calib=str(digits_dir / "calib.npz"),
                    calib_samples=50, out=tmp_path)
    assert r.manifest["precision"] == "int8" and r.manifest["data"]["calib"]["samples"] == 50


def test_h5_and_savedmodel_inputs(digits_dir, tmp_path):
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    model = keras.models.load_model(digits_dir / "digits_cnn.keras")
    model.save(tmp_path / "m.h5")
    model.save(tmp_path / "saved")  # tf-keras default: SavedModel directory
    for src, fmt in ((tmp_path / "m.h5", "h5"), (tmp_path / "saved", "savedmodel")):
        r = edgec.build(src, target="x86-cpu", precision="fp32", eval=str(digits_dir / "eval.npz"),
                        out=tmp_path / f"out-{fmt}")
        assert r.manifest["source"]["format"] == fmt
        assert r.verification["max_abs_diff"] < 1e-4


def test_uint8_io_profile(digits_dir, tmp_path):
    profile = tmp_path / "uint8-board.toml"
    profile.write_text('id = "uint8-board"\ndevice = "test"\ntarget = "tflite"\nruntime = "litert"\n'
                       'precisions = ["int8"]\ndefault_precision = "int8"\nint8_io = "uint8"\n')
    r = edgec.build(digits_dir / "digits_cnn.keras", target=str(profile), calib=str(digits_dir / "calib.npz"),
                    eval=str(digits_dir / "eval.npz"), out=tmp_path)
    art = r.manifest["artifacts"][0]
    assert art["inputs"][0]["dtype"] == "uint8" and art["inputs"][0]["quantization"]["zero_point"] == 0
    assert abs(r.verification["accuracy_drop_points"]) <= 1.0


def test_failed_build_leaves_no_partial_output(digits_dir, tmp_path):
    """A converter failure mid-build leaves no OUT/PROFILE and keeps a previous good build."""
    from edgec.errors import EdgecError
    from edgec.tfcompat import tf_and_keras

    tf, keras = tf_and_keras()
    good = edgec.build(digits_dir / "digits_cnn.keras", target="x86-cpu", precision="fp32", out=tmp_path)
    before = sha256_file(good.out_dir / "model.tflite")
    inp = keras.Input((8,))
    counts = keras.layers.Lambda(lambda t: t + tf.cast(tf.reduce_sum(tf.math.bincount(tf.cast(t * 10, tf.int32))), tf.float32))(inp)
    bad = keras.Model(inp, keras.layers.Dense(3)(counts))
    with pytest.raises(EdgecError, match="DenseBincount"):
        edgec.build(bad, target="x86-cpu", precision="fp32", out=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x86-cpu"]
    assert sha256_file(good.out_dir / "model.tflite") == before
    with pytest.raises(EdgecError):
        edgec.build(bad, target="rpi5", precision="fp32", out=tmp_path)
    assert not (tmp_path / "rpi5").exists()
    assert manifest_mod.read(good.out_dir)["precision"] == "fp32"
