"""Input ranges: pixels from image folders reach a model the way it was trained ([0, 1], [-1, 1] or
[0, 255]), inferred from a Rescaling layer when the model has one, recorded in the manifest, and
mismatched calibration data is called out."""

from __future__ import annotations

import numpy as np
import pytest

import edgec
from edgec.calibration.inputs import InputPreprocessing, infer, range_warning, resolve
from edgec.errors import EdgecError


def write_folder(root, x: np.ndarray, y: np.ndarray | None) -> None:
    """Digits as 8-bit grayscale PNGs, one sub-folder per class when labelled."""
    from PIL import Image

    for i, img in enumerate(x):
        folder = root / str(int(y[i])) if y is not None else root
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(img[..., 0] * 255).astype(np.uint8), mode="L").save(folder / f"{i:04d}.png")


@pytest.fixture(scope="session")
def folders(digits_split, tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    write_folder(root / "eval", digits_split.x_test[:270], digits_split.y_test[:270])
    write_folder(root / "calib", digits_split.x_train[:200], None)
    return root


def _train(model, x, digits_split):
    from edgec.tfcompat import set_seed, tf_and_keras

    _, keras = tf_and_keras()
    set_seed(0)
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, digits_split.y_train, epochs=15, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="session")
def pm1_model(digits_split):
    """A digits CNN trained on inputs in [-1, 1], with no layer saying so."""
    from edgec.examples import make_model

    return _train(make_model("cnn", seed=0), digits_split.x_train * 2.0 - 1.0, digits_split)


def test_minus_one_to_one_model_from_an_image_folder(pm1_model, folders, digits_split, tmp_path):
    opts = dict(target="rpi5", precision="int8", calib=str(folders / "calib"), eval=str(folders / "eval"))
    right = edgec.build(pm1_model, input_range="-1,1", out=tmp_path / "right", **opts)
    m = right.manifest
    assert m["input"]["range"] == [-1.0, 1.0] and m["input"]["source"] == "--input-range -1,1"
    assert m["data"]["eval"]["range"] == [-1.0, 1.0] and m["data"]["eval"]["preprocessed_pixels"]
    assert not m["warnings"]
    # the float model on the folder scores as it does on the arrays it was trained for
    expected = float((np.asarray(pm1_model(digits_split.x_test[:270] * 2 - 1)).argmax(1)
                      == digits_split.y_test[:270]).mean())
    assert abs(right.verification["float_accuracy"] - expected) < 0.01
    assert right.verification["float_accuracy"] > 0.9 and right.verification["accuracy_drop_points"] < 2.0
    wrong = edgec.build(pm1_model, out=tmp_path / "wrong", **opts)  # default [0, 1]: what the model never saw
    assert wrong.manifest["input"]["source"] == "default"
    assert wrong.verification["float_accuracy"] < right.verification["float_accuracy"] - 0.05


def test_calibration_far_from_eval_is_called_out(pm1_model, folders, digits_split, tmp_path):
    np.savez(tmp_path / "eval.npz", x=digits_split.x_test * 2 - 1, y=digits_split.y_test)
    result = edgec.build(pm1_model, target="rpi5", precision="int8", calib=str(folders / "calib"),
                         eval=str(tmp_path / "eval.npz"), out=tmp_path / "d")
    assert any("calibration data" in w and "spans [0, 1]" in w for w in result.manifest["warnings"])


def test_rescaling_layer_is_inferred_and_gets_raw_pixels(folders, digits_split, tmp_path):
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    layers = keras.layers
    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="to_pm1")(inp)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = _train(keras.Model(inp, layers.Dense(10, name="logits")(x)), digits_split.x_train * 255.0, digits_split)
    pre = infer(model)
    assert pre.range == (0.0, 255.0) and "to_pm1" in pre.source
    result = edgec.build(model, target="x86-cpu", precision="fp32", eval=str(folders / "eval"), out=tmp_path)
    m = result.manifest
    assert m["input"]["range"] == [0.0, 255.0] and m["input"]["source"].startswith("inferred from layer 'to_pm1'")
    assert m["data"]["eval"]["range"][1] == 255.0
    expected = float((np.asarray(model(digits_split.x_test[:270] * 255.0)).argmax(1) == digits_split.y_test[:270]).mean())
    assert abs(result.verification["float_accuracy"] - expected) < 0.01
    _, warnings = resolve(model, input_range="0,1")
    assert warnings and "expects [0, 255]" in warnings[0]


def test_normalization_values_and_their_errors():
    pre = InputPreprocessing(None, (0.5,), (0.25,))
    np.testing.assert_allclose(pre.apply(np.array([[0.0], [255.0]])), [[-2.0], [2.0]])
    assert pre.expected() == (-2.0, 2.0)
    caffe, _ = resolve(None, normalize="caffe")
    assert caffe.pixel_units and caffe.apply(np.full((1, 3), 103.939))[0, 0] == pytest.approx(0.0, abs=1e-4)
    explicit, _ = resolve(None, mean="0.485,0.456,0.406", std="0.229,0.224,0.225")
    assert not explicit.pixel_units and explicit.describe()["formula"] == "(pixel / 255 - mean) / std"
    for kwargs, message in (({"mean": "1,2"}, "go together"), ({"mean": "1,2", "std": "1"}, "one per channel"),
                            ({"mean": "a", "std": "1"}, "expected numbers"), ({"input_range": "0,2"}, "valid: 0,1"),
                            ({"input_range": "0,1", "normalize": "imagenet"}, "give one"),
                            ({"normalize": "nope"}, "valid: caffe, imagenet"), ({"mean": "1", "std": "0"}, "not be 0")):
        with pytest.raises(EdgecError, match=message):
            resolve(None, **kwargs)
    assert range_warning(np.array([0.0, 1.0]), (0.0, 255.0), "data") is not None
    assert range_warning(np.array([-1.0, 1.0]), (-1.0, 1.0), "data") is None
