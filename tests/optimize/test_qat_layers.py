"""Layers QAT cannot annotate stay float in training and are listed; when QAT cannot proceed the
build stops with one line naming the layer and the way out, and writes nothing."""

from __future__ import annotations

import pytest

from edgec.errors import EdgecError
from tests.helpers.optimize import artifact_report


@pytest.fixture(scope="module")
def unfriendly_qat(unfriendly_path, build_with):
    return build_with(unfriendly_path, qat=True, qat_skip=["conv_c"], epochs=2)


def test_unannotatable_layers_stay_float_and_are_listed(unfriendly_qat):
    qat = unfriendly_qat.manifest["optimization"]["step_details"][1]
    left = {e["layer"]: e["reason"] for e in qat["float_layers"]}
    assert "Rescaling is not supported" in left["rescale"]
    assert "Lambda" in left["halve"]
    assert left["conv_c"] == "skipped on request (--qat-skip)"
    assert "rejected by Default8BitQuantizeScheme" in left["input_norm"], "standalone BatchNormalization"
    assert {"conv_a", "upsample", "conv_b", "logits"} <= set(qat["annotated_layers"])
    assert "conv_c" not in qat["annotated_layers"]


def test_float_in_training_layers_are_still_int8_in_the_artifact(unfriendly_qat):
    report = artifact_report(unfriendly_qat)
    assert {r["dtype"] for r in report["ops"] if r["op"] not in ("QUANTIZE", "DEQUANTIZE")} == {"int8"}
    assert report["op_counts"]["RESIZE_NEAREST_NEIGHBOR"] == 1
    v = unfriendly_qat.manifest["verification"]
    assert v["accuracy_drop_points"] < 5.0, "2 epochs only: bench/ measures the 1.5-point criterion"
    chain = unfriendly_qat.manifest["optimization"]["accuracy"]
    assert abs(chain[-1]["accuracy"] - chain[-2]["accuracy"]) <= 0.01, "Keras QAT and artifact agree"


def test_unknown_qat_skip_names_the_layers(unfriendly_path, build_with, tmp_path):
    with pytest.raises(EdgecError) as err:
        build_with(unfriendly_path, qat=True, qat_skip=["conv_z"], out=tmp_path / "d")
    msg = str(err.value)
    assert "--qat-skip names no layer of model 'digits_unfriendly': conv_z; layers: image, rescale" in msg
    assert not (tmp_path / "d").exists()


def test_nothing_to_quantize_stops_with_the_way_out(unfriendly_path, build_with, tmp_path):
    everything = ["rescale", "input_norm", "conv_a", "upsample", "conv_b", "halve", "conv_c", "pool", "logits"]
    with pytest.raises(EdgecError) as err:
        build_with(unfriendly_path, qat=True, qat_skip=everything, out=tmp_path / "d")
    msg = str(err.value)
    assert msg.startswith("QAT cannot proceed: no layer of model 'digits_unfriendly' can be quantization-aware")
    assert "conv_a: skipped on request" in msg and "drop --qat and use post-training int8 (--calib DATA)" in msg
    assert "\n" not in msg and not (tmp_path / "d").exists()


@pytest.mark.parametrize("config, message", [
    (lambda layer: {"name": layer.name}, "layer 'scale_by' (Scale) cannot be re-created from its config"),
    (None, "layer 'scale_by' (Scale) has a config without 'name'"),
])
def test_layer_that_cannot_be_rebuilt_is_named(build_with, tmp_path, config, message):
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()

    class Scale(keras.layers.Layer):
        def __init__(self, factor):  # no **kwargs: tf-keras' automatic config has no name
            super().__init__(name="scale_by")
            self.factor = factor

        def call(self, x):
            return x * self.factor

    if config is not None:  # a get_config that forgets the constructor argument
        Scale.get_config = config
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(Scale(2.0)(inp))
    model = keras.Model(inp, keras.layers.Dense(10)(x))
    with pytest.raises(EdgecError) as err:
        build_with(model, qat=True, out=tmp_path / "d")
    msg = str(err.value)
    assert msg.startswith(message) and "\n" not in msg
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_cli_prints_float_layers(unfriendly_path, digits_dir, cli_runner, tmp_path):
    code, out, err = cli_runner("build", unfriendly_path, "--target", "rpi5", "--fine-tune", digits_dir / "train.npz",
                                "--qat", "--epochs", "1", "--out", tmp_path)
    assert code == 0, err
    assert "compression: qat" in out and "float in training" in out
    assert "int8 representative data:" in out and "(fine-tune inputs; --qat without --calib)" in out
