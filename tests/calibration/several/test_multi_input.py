"""Models with several inputs: data keyed by input name, builds on every target kind, the
manifest listing every input, verification pairing outputs by name."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import edgec
from edgec.errors import EdgecError

INPUTS = ["image", "side"]


def _inputs(manifest) -> list[str]:
    return [i["name"] for i in manifest["inputs"]]


@pytest.fixture(scope="session")
def tfkeras_builds(tmp_path_factory, multi_dir):
    """The tf-keras two-input model built for rpi5, coral-usb and jetson-orin-nano at int8."""
    out = tmp_path_factory.mktemp("dist-multi")
    results = edgec.build(multi_dir / "two_inputs.keras", target=["rpi5", "coral-usb", "jetson-orin-nano"],
                          precision="int8", calib=str(multi_dir / "calib.npz"), eval=str(multi_dir / "eval.npz"),
                          out=out)
    return {r.manifest["profile"]["id"]: r for r in results}


def test_load_npz_keyed_by_input_name(multi_data):
    from edgec import calibration

    shapes = {"image": (8, 8, 1), "side": (4,)}
    ds = calibration.load(multi_data / "calib.npz", shapes, limit=50, seed=1)
    assert list(ds.x) == INPUTS and len(ds) == 50 and ds.total == 200
    assert ds.pixel_inputs == ("image",)  # uint8 pixels scaled to [0, 1]; the float side vector as given
    assert ds.x["image"].max() <= 1.0 and ds.x["side"].max() > 1.0
    described = ds.describe()["inputs"]
    assert described["image"]["preprocessed_pixels"] and not described["side"]["preprocessed_pixels"]


def test_load_function_yielding_dicts(multi_data):
    from edgec import calibration

    shapes = {"image": (8, 8, 1), "side": (4,)}
    ds = calibration.load(f"{multi_data}/multi_data.py:batches", shapes)
    assert list(ds.x) == INPUTS and len(ds) == 200 and ds.y is None
    pairs = calibration.load(f"{multi_data}/multi_data.py:pairs", shapes, need_labels=True)
    assert list(pairs.x) == INPUTS  # in the model's order, whatever order the dict had
    eval_npz = np.load(multi_data / "eval.npz")
    np.testing.assert_array_equal(pairs.y, eval_npz["y"])
    np.testing.assert_array_equal(pairs.x["side"], eval_npz["side"])
    with pytest.raises(EdgecError, match="missing 'side'; extra 'meta'.*'image', 'side'"):
        calibration.load(f"{multi_data}/multi_data.py:wrong", shapes)


def test_data_checked_per_input(tmp_path, multi_data):
    from edgec import calibration

    shapes = {"image": (8, 8, 1), "side": (4,)}
    side = np.zeros((10, 4), np.float32)
    side[3, 2] = np.nan
    np.savez(tmp_path / "nan.npz", image=np.zeros((10, 8, 8, 1), np.float32), side=side)
    with pytest.raises(EdgecError, match="input 'side' holds nan at sample 3"):
        calibration.load(tmp_path / "nan.npz", shapes)
    np.savez(tmp_path / "short.npz", image=np.zeros((10, 8, 8, 1), np.float32), side=np.zeros((9, 4), np.float32))
    with pytest.raises(EdgecError, match="image: 10, side: 9"):
        calibration.load(tmp_path / "short.npz", shapes)
    np.savez(tmp_path / "shape.npz", image=np.zeros((10, 8, 8, 1), np.float32), side=np.zeros((10, 5), np.float32))
    with pytest.raises(EdgecError, match="input 'side' has samples of shape \\(5,\\)"):
        calibration.load(tmp_path / "shape.npz", shapes)
    with pytest.raises(EdgecError, match="image folder, which feeds a single-input model"):
        calibration.load(tmp_path, shapes)
    np.save(tmp_path / "one.npy", np.zeros((10, 4), np.float32))
    with pytest.raises(EdgecError, match="one array per input named 'image', 'side'"):
        calibration.load(tmp_path / "one.npy", shapes)


@pytest.mark.parametrize("arrays, said", [
    ({"image": "x"}, "missing 'side'"),
    ({"image": "x", "side": "s", "meta": "s"}, "extra 'meta'"),
    ({"x": "x"}, "missing 'image', 'side'; extra 'x'"),
])
def test_wrong_npz_keys_name_the_expected_ones(tmp_path, arrays, said):
    from edgec import calibration

    image, side = np.zeros((10, 8, 8, 1), np.float32), np.zeros((10, 4), np.float32)
    np.savez(tmp_path / "bad.npz", **{k: image if v == "x" else side for k, v in arrays.items()})
    with pytest.raises(EdgecError) as info:
        calibration.load(tmp_path / "bad.npz", {"image": (8, 8, 1), "side": (4,)})
    assert said in str(info.value) and "expects one array per input named 'image', 'side'" in str(info.value)


def test_wrong_npz_keys_exit_2(tmp_path, cli_runner):
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()  # an untrained two-input model: the data is refused before it runs
    image, side = keras.Input((8, 8, 1), name="image"), keras.Input((4,), name="side")
    joined = keras.layers.Concatenate()([keras.layers.Flatten()(image), side])
    keras.Model([image, side], keras.layers.Dense(3)(joined)).save(tmp_path / "m.keras")
    np.savez(tmp_path / "bad.npz", image=np.zeros((10, 8, 8, 1), np.float32), meta=np.zeros((10, 4), np.float32))
    code, _, err = cli_runner("build", tmp_path / "m.keras", "--target", "rpi5", "--precision", "int8",
                              "--calib", tmp_path / "bad.npz", "--out", tmp_path / "dist")
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "missing 'side'; extra 'meta'" in lines[0], err
    assert "expects one array per input named 'image', 'side'" in lines[0]
    assert not (tmp_path / "dist" / "rpi5").exists()


def _check_build(result, runtime_ok=True):
    m = result.manifest
    assert _inputs(m) == INPUTS
    assert [i["name"] for i in m["source"]["inputs"]] == INPUTS
    assert m["inputs"][0]["shape"] == [8, 8, 1] and m["inputs"][1]["shape"] == [4]
    v = m["verification"]
    assert v["samples"] == 200 and [o["name"] for o in v["outputs"]] == ["probs"]
    assert v["agreement"] > 0.9 and v["accuracy_drop_points"] < 5.0
    return m


@pytest.mark.slow
def test_tflite_int8(tfkeras_builds):
    m = _check_build(tfkeras_builds["rpi5"])
    image, side = m["inputs"]
    assert isinstance(image["preprocessing"], dict) and image["preprocessing"]["range"] == [0.0, 1.0]
    assert side["preprocessing"].startswith("none")
    assert side["ranges"]["calib"][1] > 1.0 and image["ranges"]["calib"][1] <= 1.0
    art = next(a for a in m["artifacts"] if a["file"] == "model.tflite")
    assert len(art["inputs"]) == 2 and all(i["dtype"] == "int8" for i in art["inputs"])
    assert m["verification"]["runtime"] == "litert"


@pytest.mark.slow
def test_edgetpu(tfkeras_builds):
    m = _check_build(tfkeras_builds["coral-usb"])
    assert m["verification"]["runtime"] == "litert"


@pytest.mark.slow
def test_tensorrt_int8_onnx_verified(tfkeras_builds):
    import onnx

    result = tfkeras_builds["jetson-orin-nano"]
    m = _check_build(result)
    assert m["verification"]["runtime"] == "onnxruntime"
    onnx_file = next(a["file"] for a in m["artifacts"] if a["format"] == "onnx")
    proto = onnx.load(result.out_dir / onnx_file)
    assert sorted(i.name for i in proto.graph.input) == INPUTS
    assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node)


@pytest.mark.slow
def test_litert_runner_feeds_by_name(tfkeras_builds, multi_dir):
    """Inputs go to the tensors of their names: swapping the dict's order changes nothing, and the
    artifact's outputs follow the float model's."""
    from edgec.model_io import load_model, predict
    from edgec.targets.tflite import LiteRTRunner

    data = np.load(multi_dir / "eval.npz")
    x = {"image": data["image"][:20], "side": data["side"][:20]}
    runner = LiteRTRunner(tfkeras_builds["rpi5"].out_dir / "model.tflite")
    a = runner(x)[0]
    b = runner({"side": x["side"], "image": x["image"]})[0]
    np.testing.assert_array_equal(a, b)
    ref = predict(load_model(multi_dir / "two_inputs.keras").model, x)[0]
    assert (a.argmax(1) == ref.argmax(1)).mean() >= 0.9
    with pytest.raises(EdgecError, match="inputs are"):
        runner({"image": x["image"], "meta": x["side"]})


@pytest.mark.slow
def test_agent_feeds_every_input(tfkeras_builds, multi_dir, agent_pyz, tmp_path):
    """The device agent benchmarks the two-input artifact: random data for every input tensor, or a
    sample .npz keyed by the model's input names (the .tflite calls them serving_default_NAME:0)."""
    model = tfkeras_builds["rpi5"].out_dir / "model.tflite"
    reports = {}
    for how, extra in (("random", []), ("file", ["--input", str(multi_dir / "eval.npz")])):
        proc = subprocess.run([sys.executable, str(agent_pyz), "bench", str(model), "--runs", "5", "--json", *extra],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stderr
        reports[how] = json.loads(proc.stdout)
    for how, report in reports.items():
        inputs = report["inputs"]
        assert sorted(i["name"] for i in inputs) == ["serving_default_image:0", "serving_default_side:0"]
        assert all(i["source"] == how for i in inputs)
        assert report["latency_ms"]


@pytest.mark.slow
def test_prune_fine_tunes_on_both_inputs(tmp_path, multi_dir):
    result = edgec.build(multi_dir / "two_inputs.keras", target="rpi5", precision="int8", prune=0.5,
                         fine_tune=str(multi_dir / "train.npz"), calib=str(multi_dir / "calib.npz"),
                         eval=str(multi_dir / "eval.npz"), out=tmp_path)
    m = _check_build(result)
    chain = {entry["stage"]: entry["accuracy"] for entry in m["optimization"]["accuracy"]}
    assert "prune" in chain and chain["prune"] > 0.8, chain  # fine-tuned on both inputs
    assert chain["artifact (int8)"] > 0.8, chain


@pytest.mark.slow
def test_keras3_two_inputs_every_target(tmp_path, multi_dir):
    """A Keras 3 file with two inputs, through Keras 3's own export, on the three target kinds;
    the eval data comes from a function yielding (dict, y) pairs."""
    results = edgec.build(multi_dir / "k3_two_inputs.keras", target=["rpi5", "coral-usb", "jetson-orin-nano"],
                          precision="int8", calib=str(multi_dir / "calib.npz"),
                          eval=f"{multi_dir}/multi_data.py:pairs", out=tmp_path)
    for result in results:
        m = result.manifest
        assert m["source"]["keras"]["path"] == "export"
        assert _inputs(m) == INPUTS and [i["name"] for i in m["source"]["inputs"]] == INPUTS
        assert m["verification"]["samples"] == 200 and m["verification"]["agreement"] > 0.85, m["verification"]
    assert [r.manifest["verification"]["runtime"] for r in results] == ["litert", "litert", "onnxruntime"]


@pytest.mark.slow
def test_savedmodel_signature_with_two_inputs(tmp_path, multi_dir):
    """A SavedModel without Keras metadata whose serving signature takes two named inputs."""
    from edgec.tfcompat import tf_and_keras

    tf, keras = tf_and_keras()
    model = keras.models.load_model(multi_dir / "two_inputs.keras", compile=False)
    module = tf.Module()
    module.model = model
    module.serve = tf.function(lambda side, image: {"probs": model([image, side], training=False)},
                               input_signature=[tf.TensorSpec([None, 4], tf.float32, name="side"),
                                                tf.TensorSpec([None, 8, 8, 1], tf.float32, name="image")])
    tf.saved_model.save(module, str(tmp_path / "saved"), signatures={"serving_default": module.serve})
    result = edgec.build(tmp_path / "saved", target="rpi5", precision="int8", calib=str(multi_dir / "calib.npz"),
                         eval=str(multi_dir / "eval.npz"), out=tmp_path / "dist")
    m = result.manifest
    assert m["source"]["format"] == "signature"
    assert sorted(_inputs(m)) == INPUTS and m["verification"]["agreement"] > 0.9


@pytest.mark.slow
def test_analyze_two_inputs(multi_dir):
    """edgec analyze on a two-input model: the per-op table from the QuantizationDebugger, fed by
    input name, and the metric on the labelled eval data."""
    from edgec.analyze import analyze

    result = analyze(multi_dir / "two_inputs.keras", "rpi5", calib=str(multi_dir / "calib.npz"),
                     eval=str(multi_dir / "eval.npz"))
    assert sorted(result["data"]["calib"]["inputs"]) == INPUTS
    ops = result["ops"]
    assert any(o["op"] == "CONCATENATION" for o in ops)
    assert all(o["sqnr_db"] is None or o["sqnr_db"] > 20 for o in ops if o["op"] in ("CONV_2D", "FULLY_CONNECTED"))


@pytest.mark.slow
def test_cli_build_lists_inputs(tmp_path, multi_dir, cli_runner):
    code, out, err = cli_runner("build", multi_dir / "two_inputs.keras", "--target", "rpi5", "--precision", "int8",
                                "--calib", multi_dir / "calib.npz", "--eval", multi_dir / "eval.npz",
                                "--out", tmp_path)
    assert code == 0, err
    assert "inputs: image float32[8, 8, 1] (pixels), side float32[4] (as given)" in " ".join(out.split())
    manifest = json.loads((tmp_path / "rpi5" / "manifest.json").read_text())
    assert _inputs(manifest) == INPUTS and manifest["verification"]["runtime"] == "litert"
