"""Channel pruning: real surgery (smaller layers, same function as the masked original), tied
residual groups, listed layers that cannot lose channels, and builds for every target kind."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.errors import EdgecError
from edgec.optimize import channels, graph

RNG = np.random.default_rng(0)


def _randomize_batchnorm(model):
    """Non-trivial BatchNorm statistics, so a wrong slice would show in the outputs."""
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.set_weights([RNG.random(w.shape).astype(np.float32) + 0.5 for w in layer.get_weights()])
    return model


def odd_model():
    """A stem, then Concatenate, SeparableConv2D, PReLU, depthwise, Flatten into Dense, and a
    Reshape that fixes the size of the Dense layer feeding it."""
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    L = keras.layers
    inp = keras.Input((8, 8, 1), name="image")
    stem = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    a = L.PReLU(shared_axes=[1, 2], name="prelu")(L.Conv2D(16, 3, padding="same", name="conv_a")(stem))
    b = L.BatchNormalization(name="bn_b")(L.SeparableConv2D(24, 3, padding="same", name="sep_b")(stem))
    x = L.Concatenate(name="concat")([a, b])
    x = L.Activation("swish", name="swish")(L.DepthwiseConv2D(3, padding="same", name="dw")(x))
    x = L.MaxPooling2D(name="pool")(L.Conv2D(32, 1, name="pw")(x))
    x = L.Dropout(0.1, name="drop")(L.Dense(64, activation="relu", name="fc")(L.Flatten(name="flat")(x)))
    x = L.Dense(64, name="fixed")(x)
    x = L.Flatten(name="flat2")(L.Reshape((8, 8), name="reshape")(x))
    return keras.Model(inp, L.Dense(10, name="logits")(x), name="odd")


def _model(arch: str):
    from edgec.examples import make_model

    return _randomize_batchnorm(odd_model() if arch == "odd" else make_model(arch))


def test_keep_count_rounds_to_blocks_of_four():
    assert channels.keep_count(32, 0.5) == 16
    assert channels.keep_count(64, 0.3) == 44
    assert channels.keep_count(24, 0.5) == 12
    assert channels.keep_count(10, 0.5) == 5  # small layers are not rounded
    assert channels.keep_count(3, 0.9) == 1
    assert channels.keep_count(16, 0.99) == 1


@pytest.mark.parametrize("arch", ["cnn", "residual", "separable", "odd"])
def test_rebuilt_model_computes_the_masked_original(arch):
    """Before fine-tuning, the smaller model is the original with the removed channels zeroed
    where they are read: the surgery copies the right weights, no mask is left in the model."""
    model = _model(arch)
    plan = channels.analyse(model, 0.5, "l1")
    smaller = channels.rebuild(model, plan)
    reference = channels.masked(model, plan)
    x = RNG.random((16, *model.input_shape[1:])).astype(np.float32)
    np.testing.assert_allclose(smaller(x).numpy(), reference(x).numpy(), atol=1e-5, rtol=1e-4)
    assert not np.allclose(model(x).numpy(), reference(x).numpy(), atol=1e-3), "nothing was removed"
    assert smaller.output_shape == model.output_shape and smaller.output_names == model.output_names
    assert smaller.input_names == model.input_names
    before, after = graph.totals(model), graph.totals(smaller)
    assert after["params"] < before["params"]
    if arch in ("residual", "separable"):
        assert after["macs"] <= 0.55 * before["macs"], (before, after)
    for layer in smaller.layers:  # real surgery: every kept kernel is dense and smaller
        if getattr(layer, "kernel", None) is not None and layer.name != "logits":
            assert layer.kernel.shape[-1] <= model.get_layer(layer.name).kernel.shape[-1]


def test_residual_add_groups_stay_tied():
    model = _model("residual")
    plan = channels.analyse(model, 0.5, "l2")
    tied_groups = [members for members in plan.groups.values() if len(members) > 1]
    assert len(tied_groups) == 1, plan.groups
    tied = tied_groups[0]
    assert len(tied) == 3, tied  # the stem and the last conv of each of the two blocks meet in Add
    assert tied[0] == model.layers[1].name  # the stem
    smaller = channels.rebuild(model, plan)
    widths = {smaller.get_layer(name).kernel.shape[-1] for name in tied}
    assert widths == {16}
    for layer in smaller.layers:
        if type(layer).__name__ == "Add":
            assert len({tuple(t.shape) for t in layer.input}) == 1


def test_layers_that_cannot_lose_channels_are_listed_and_left_whole():
    model = _model("odd")
    plan = channels.analyse(model, 0.5)
    reasons = {name: plan.blocked[g] for g in plan.blocked for name in plan.groups[g]}
    assert "Reshape 'reshape'" in reasons["fixed"] and "model output" in reasons["logits"]
    assert reasons["stem"].startswith("the stem: reads at most 4 channels (the image)")
    smaller = channels.rebuild(model, plan)
    assert smaller.get_layer("fixed").units == 64 and smaller.get_layer("logits").units == 10
    assert smaller.get_layer("stem").filters == 8
    assert smaller.get_layer("fc").units == 32 and smaller.get_layer("sep_b").filters == 12
    # the Dense after Flatten lost the rows of the removed channels at every pixel
    assert smaller.get_layer("fc").kernel.shape[0] == 16 * 16


def test_criteria_rank_channels_by_l1_l2_or_batchnorm_gamma():
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    L = keras.layers
    inp = keras.Input((4,))
    x = L.Dense(4, use_bias=False, name="fc")(inp)
    x = L.BatchNormalization(name="bn")(x)
    model = keras.Model(inp, L.Dense(2, name="out")(x))
    # column 0: one large weight (L2 wins), column 1: many medium ones (L1 wins)
    kernel = np.array([[3.0, 1.0, 0.1, 0.1], [0.0, 1.0, 0.1, 0.1], [0.0, 1.0, 0.1, 0.1], [0.0, 1.0, 0.1, 0.1]])
    model.get_layer("fc").set_weights([kernel.astype(np.float32)])
    gamma = np.array([0.1, 0.1, 5.0, 0.1], dtype=np.float32)
    bn = model.get_layer("bn")
    bn.set_weights([gamma, *bn.get_weights()[1:]])
    group = lambda plan: plan.kept[plan.producers["fc"][1]]  # noqa: E731
    assert group(channels.analyse(model, 0.75, "l1")) == [1]
    assert group(channels.analyse(model, 0.75, "l2")) == [0]
    assert group(channels.analyse(model, 0.75, "bn")) == [2]
    assert channels.analyse(model, 0.75, "bn").fallback == []


def test_a_model_without_prunable_channels_is_refused(build_with, tmp_path):
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    inp = keras.Input((8, 8, 1), name="image")
    model = keras.Model(inp, keras.layers.Dense(10, name="logits")(keras.layers.Flatten()(inp)))
    model.save(tmp_path / "linear.keras")
    with pytest.raises(EdgecError, match=r"--prune-channels 0.5 finds no layer .*\(logits: reaches a model output"):
        build_with(tmp_path / "linear.keras", precision="fp32", prune_channels=0.5, epochs=1)


@pytest.mark.slow
def test_channel_pruning_build_reports_channels_params_and_macs(arch_paths, build_with, digits_dir):
    result = build_with(arch_paths["residual"], prune_channels=0.5, calib=str(digits_dir / "calib.npz"))
    m = result.manifest
    o = m["optimization"]
    assert o["steps"] == ["channels"] and o["channels"] == {"fraction": 0.5, "criterion": "bn"}
    assert m["options"]["prune_channels"] == 0.5
    assert o["structure"]["macs"]["cut_percent"] >= 45.0 and o["structure"]["params"]["cut_percent"] >= 45.0
    assert "edgec profile" in o["structure"]["latency"]
    step = o["step_details"][1]
    assert step["step"] == "channels" and step["batchnorm_recalibrated"] == 5
    rows = {r["layer"]: r for r in step["layers"]}
    assert rows["logits"]["channels_after"] == 10 and "model output" in rows["logits"]["kept_whole"]
    convs = [r for r in rows.values() if r["type"] == "Conv2D"]
    assert all(r["channels_after"] == r["channels_before"] // 2 for r in convs)
    assert all(r["macs_after"] < r["macs_before"] for r in convs)
    assert sum(len(r.get("tied_with", [])) > 0 for r in convs) == 3
    # the int8 artifact holds the smaller kernels
    from edgec import tflite_model

    art = tflite_model.load(result.out_dir / "model.tflite")
    outs = sorted(art.kernel(op).shape[0] for op in art.operators if op.op == "CONV_2D")
    assert outs == [16, 16, 16, 16, 16, 32]
    assert m["verification"]["accuracy_drop_points"] < 6.0, "few epochs: the accuracy criteria are measured in bench/"


@pytest.mark.parametrize("target, options", [
    ("coral-usb", {"qat": True}),
    ("jetson-orin-nano", {"qat": True}),
])
@pytest.mark.slow
def test_channel_pruned_model_builds_for_edgetpu_and_tensorrt(arch_paths, build_with, target, options):
    result = build_with(arch_paths["separable"], target=target, prune_channels=0.5, max_accuracy_drop=6.0, **options)
    assert result.passed, result.checks
    o = result.manifest["optimization"]
    assert o["steps"] == ["channels", "qat"]
    assert o["structure"]["macs"]["cut_percent"] >= 45.0


@pytest.mark.slow
def test_cli_prints_the_channel_table(arch_paths, digits_dir, cli_runner, tmp_path):
    code, out, _ = cli_runner("build", arch_paths["cnn"], "-t", "x86-cpu", "-p", "fp32", "--fine-tune",
                              digits_dir / "train.npz", "--prune-channels", "0.5", "--channel-criterion", "l2",
                              "--epochs", "1", "-o", tmp_path)
    assert code == 0, out
    assert "channels: per layer" in out and "32 -> 16" in out and "MACs per sample" in out
