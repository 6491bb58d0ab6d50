"""What real models have, built and verified on every target kind: several named outputs whose
names sort differently from their order, dict outputs (a tf-keras SavedModel and a plain
SavedModel signature), an op without an int8 kernel, and rebuilds that give the same bytes.

The models are small but trained for real on scikit-learn's digits: a "face detector head" with a
box regression [4], landmarks [10] and a softmax [2] (is the digit >= 5?).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgec
from edgec.errors import CheckFailed, EdgecError
from tests.helpers.cli import run_cli

ORDER = ["zbox", "landmarks", "aclass"]  # the model's order; sorted by name it is aclass, landmarks, zbox
TARGETS = {"tflite": "rpi5", "edgetpu": "coral-usb", "tensorrt": "jetson-orin-nano"}


def head_targets(x: np.ndarray, digits: np.ndarray) -> dict[str, np.ndarray]:
    img = x[..., 0]
    box = np.stack([img[:, :4].mean((1, 2)), img[:, 4:].mean((1, 2)), img[:, :, :4].mean((1, 2)),
                    img[:, :, 4:].mean((1, 2))], axis=1)
    landmarks = np.concatenate([img.mean(2), img.mean((1, 2))[:, None], img.std((1, 2))[:, None]], axis=1)
    return {"zbox": box.astype(np.float32), "landmarks": landmarks.astype(np.float32),
            "aclass": (digits >= 5).astype(np.int64)}


@pytest.fixture(scope="session")
def head(digits_split, tmp_path_factory):
    """The trained three-output model (list outputs) and a dict-output twin of it, with eval data."""
    from edgec.tfcompat import set_seed, tf_and_keras

    tf, keras = tf_and_keras()
    set_seed(0)
    layers = keras.layers
    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(32, activation="relu")(x)
    outs = [layers.Dense(4, name="zbox")(x), layers.Dense(10, name="landmarks")(x),
            layers.Dense(2, activation="softmax", name="aclass")(x)]
    model = keras.Model(inp, outs, name="face_head")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=["mse", "mse", "sparse_categorical_crossentropy"])
    t = head_targets(digits_split.x_train, digits_split.y_train)
    model.fit(digits_split.x_train, [t[n] for n in ORDER], epochs=12, batch_size=32, verbose=0)
    out = tmp_path_factory.mktemp("head")
    model.save(out / "head.keras")
    ev = head_targets(digits_split.x_test, digits_split.y_test)
    np.savez(out / "eval.npz", x=digits_split.x_test, y=ev["aclass"])
    np.savez(out / "calib.npz", x=digits_split.x_train[:300])
    dict_model = keras.Model(inp, {"box": outs[0], "landmarks": outs[1], "face": outs[2]}, name="face_head_dict")
    dict_model.save(out / "head_dict_keras")  # a tf-keras SavedModel: Keras metadata, dict outputs

    class Head(tf.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="image")])
        def serve(self, image):
            box, landmarks, face = self.m(image, training=False)
            return {"box": box, "landmarks": landmarks, "face": face}

    module = Head(model)
    tf.saved_model.save(module, str(out / "head_signature"), signatures={"serving_default": module.serve})
    return {"dir": out, "model": out / "head.keras", "dict_keras": out / "head_dict_keras",
            "signature": out / "head_signature", "eval": out / "eval.npz", "calib": out / "calib.npz",
            "float": model}


@pytest.mark.parametrize("kind", list(TARGETS))
def test_three_named_outputs_keep_their_order_and_names(head, kind, tmp_path):
    result = edgec.build(head["model"], target=TARGETS[kind], precision="int8", calib=str(head["calib"]),
                         eval=str(head["eval"]), out=tmp_path)
    m = result.manifest
    v = m["verification"]
    assert [o["name"] for o in v["outputs"]] == ORDER
    assert [o["index"] for o in v["outputs"]] == [0, 1, 2], "the artifact keeps the model's output order"
    assert v["eval_output"] == "aclass" and not v["reordered_outputs"]
    face = v["outputs"][2]
    assert face["labelled"] and face["distribution"] and face["agreement"] >= 0.95
    assert face["float_accuracy"] > 0.85 and abs(face["accuracy_drop_points"]) <= 3.0
    for reg in v["outputs"][:2]:
        assert not reg["labelled"] and "agreement" not in reg
        assert reg["sqnr_db"] > 15 and reg["relative_max_abs_error"] < 0.5
    assert v["accuracy_drop_points"] == face["accuracy_drop_points"]
    primary = next(a for a in m["artifacts"] if a.get("verified"))
    if primary["format"] == "tflite":
        from edgec.targets.tflite import LiteRTRunner

        runner = LiteRTRunner(result.out_dir / primary["file"])
        assert runner.output_names == ORDER
        details = runner.interpreter.get_output_details()
        assert [list(d["shape_signature"][1:]) for d in details] == [[4], [10], [2]]
        assert [o["name"] for o in primary["outputs"]] == ORDER
        assert primary["float_ops"] == []
    else:
        import onnx

        proto = onnx.load(result.out_dir / primary["file"])
        assert [o.name for o in proto.graph.output] == ORDER
        assert primary["float_ops"] == []


def test_artifact_outputs_equal_the_float_models_by_name(head, tmp_path):
    """fp32: every output of the artifact, looked up by name, equals the Keras output of that name."""
    from edgec.targets.tflite import LiteRTRunner

    result = edgec.build(head["model"], target="x86-cpu", precision="fp32", eval=str(head["eval"]), out=tmp_path)
    x = np.load(head["eval"])["x"][:64]
    runner = LiteRTRunner(result.out_dir / "model.tflite")
    got = dict(zip(runner.output_names, runner(x), strict=True))
    ref = head["float"](x, training=False)
    for name, expected in zip(ORDER, ref, strict=True):
        np.testing.assert_allclose(got[name], np.asarray(expected), atol=1e-5)


@pytest.mark.parametrize("which", ["dict_keras", "signature"])
@pytest.mark.parametrize("kind", ["tflite", "tensorrt"])
def test_dict_outputs_from_savedmodels(head, which, kind, tmp_path):
    result = edgec.build(head[which], target=TARGETS[kind], precision="int8", calib=str(head["calib"]),
                         eval=str(head["eval"]), max_accuracy_drop=3.0, out=tmp_path)
    m = result.manifest
    assert m["source"]["format"] == ("savedmodel" if which == "dict_keras" else "signature")
    assert [o["name"] for o in m["source"]["outputs"]] == ["box", "face", "landmarks"]
    v = m["verification"]
    assert [o["name"] for o in v["outputs"]] == ["box", "face", "landmarks"]
    assert [o["index"] for o in v["outputs"]] == [0, 1, 2]
    assert v["eval_output"] == "face" and v["float_accuracy"] > 0.85
    assert result.passed


def test_signature_savedmodel_refuses_compression_with_one_line(head, tmp_path):
    proc = run_cli("build", head["signature"], "--target", "rpi5", "--fine-tune", head["eval"], "--qat",
                   "--out", tmp_path)
    assert proc.returncode == 2
    assert "SavedModel without Keras metadata" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())


def test_eval_output_must_be_named_when_ambiguous(head, digits_split, tmp_path):
    """Two softmax outputs: labels cannot be paired by guess; --eval-output settles it."""
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    base = head["float"]
    twin = keras.Model(base.inputs, [*base.outputs, keras.layers.Softmax(name="bclass")(base.outputs[0])])
    with pytest.raises(EdgecError, match=r"--eval-output NAME"):
        edgec.build(twin, target="x86-cpu", precision="fp32", eval=str(head["eval"]), out=tmp_path)
    with pytest.raises(EdgecError, match="is not an output"):
        edgec.build(twin, target="x86-cpu", precision="fp32", eval=str(head["eval"]), eval_output="nope",
                    out=tmp_path)
    result = edgec.build(twin, target="x86-cpu", precision="fp32", eval=str(head["eval"]), eval_output="aclass",
                         out=tmp_path)
    assert result.verification["eval_output"] == "aclass"
    assert result.verification["accuracy_drop_points"] == 0.0


def test_eval_without_labels_gives_agreement_and_error(head, tmp_path):
    x = np.load(head["eval"])["x"]
    np.savez(tmp_path / "unlabelled.npz", x=x)
    result = edgec.build(head["model"], target="rpi5", precision="int8", calib=str(head["calib"]),
                         eval=str(tmp_path / "unlabelled.npz"), out=tmp_path / "dist")
    v = result.verification
    assert v["labelled"] is False and v["eval_output"] is None and "float_accuracy" not in v
    face = next(o for o in v["outputs"] if o["name"] == "aclass")
    assert face["agreement"] > 0.9 and "artifact_accuracy" not in face
    with pytest.raises(EdgecError, match="needs labelled --eval|no labels"):
        edgec.build(head["model"], target="rpi5", precision="int8", calib=str(head["calib"]),
                    eval=str(tmp_path / "unlabelled.npz"), max_accuracy_drop=1.0, out=tmp_path / "dist2")


@pytest.fixture(scope="session")
def squarer(digits_split):
    """A digits CNN with a Lambda computing tf.square, which has no int8 kernel in TFLite."""
    from edgec.examples import train
    from edgec.tfcompat import set_seed, tf_and_keras

    tf, keras = tf_and_keras()
    set_seed(0)
    layers = keras.layers
    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    # code without a closure (.h5 saving deep-copies it); Lambda layers load with tf in their globals
    square = eval("lambda t: tf.math.square(t)", {"tf": tf})  # noqa: S307
    x = layers.Lambda(square, name="square")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, layers.Dense(10, name="logits")(x), name="squarer")
    train(model, digits_split, epochs=5, seed=0)
    return model


def test_int8_with_float_ops_fails_unless_allowed(squarer, digits_dir, tmp_path):
    opts = dict(target="rpi5", precision="int8", calib=str(digits_dir / "calib.npz"),
                eval=str(digits_dir / "eval.npz"))
    result = edgec.build(squarer, out=tmp_path / "strict", **opts)
    art = result.manifest["artifacts"][0]
    ops = [o["op"] for o in art["float_ops"]]
    assert "SQUARE" in ops and "DEQUANTIZE" in ops
    assert not result.passed
    with pytest.raises(CheckFailed, match=r"computes \d+ ops in float: .*SQUARE"):
        result.raise_for_checks()
    allowed = edgec.build(squarer, out=tmp_path / "allowed", allow_float_ops=True, **opts)
    assert allowed.passed and allowed.manifest["artifacts"][0]["float_ops"] == art["float_ops"]
    check = next(c for c in allowed.checks if c["name"] == "full_integer")
    assert "accepted with --allow-float-ops" in check["message"]


def test_float_ops_cli_exit_code_and_inspect(squarer, digits_dir, tmp_path):
    path = tmp_path / "squarer.h5"
    squarer.save(path)
    proc = run_cli("build", path, "--target", "rpi5", "--calib", digits_dir / "calib.npz", "--out", tmp_path / "d")
    assert proc.returncode == 1, proc.stderr
    assert "computes" in proc.stderr and "SQUARE" in proc.stderr and "--allow-float-ops" in proc.stderr
    assert "float ops in model.tflite" in proc.stdout
    inspect = run_cli("inspect", tmp_path / "d" / "rpi5" / "model.tflite", "--json")
    report = json.loads(inspect.stdout)
    assert "SQUARE" in [o["op"] for o in report["float_ops"]]


@pytest.mark.slow
def test_same_inputs_same_bytes_with_fine_tuning(digits_dir, tmp_path):
    """Pruning + QAT twice with one seed: byte-identical artifacts; the manifest says why."""
    shas = []
    for run in ("a", "b"):
        result = edgec.build(digits_dir / "digits_cnn.keras", target="rpi5", fine_tune=str(digits_dir / "train.npz"),
                             prune=0.5, qat=True, epochs=2, eval=str(digits_dir / "eval.npz"), out=tmp_path / run)
        shas.append(result.manifest["artifacts"][0]["sha256"])
        repro = result.manifest["reproducibility"]
        assert (repro["seed"], repro["op_determinism"], type(repro["onednn"])) == (0, True, bool)
    assert shas[0] == shas[1]


@pytest.mark.parametrize("kind", list(TARGETS))
def test_nested_outputs_are_named_by_their_path(head, kind, tmp_path):
    """{"face": softmax, "heads": [box, landmarks]}: outputs face, heads/0, heads/1 in that order."""
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    base = head["float"]
    box, landmarks, face = base.outputs
    nested = keras.Model(base.inputs, {"face": face, "heads": [box, landmarks]}, name="face_head_nested")
    result = edgec.build(nested, target=TARGETS[kind], precision="int8", calib=str(head["calib"]),
                         eval=str(head["eval"]), out=tmp_path)
    v = result.verification
    assert [o["name"] for o in v["outputs"]] == ["face", "heads/0", "heads/1"]
    assert [o["index"] for o in v["outputs"]] == [0, 1, 2] and v["eval_output"] == "face"
    assert [o["shape"] for o in v["outputs"]] == [[2], [4], [10]]
    assert v["outputs"][1]["sqnr_db"] > 15
