"""Each step on its own, through edgec.optimize.optimize: real TF-MOT wrapping and fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.calibration import Dataset
from edgec.config import BuildOptions, Precision
from edgec.optimize import optimize, resolve
from edgec.progress import Progress
from tests.helpers.optimize import FAST


class RecordingTarget:
    """A target whose QAT scheme is TF-MOT's plain default 8-bit scheme, passed explicitly: the
    path a target with a scheme of its own (TensorRT) takes. Records what it was asked."""

    def __init__(self, scheme=None):
        self.scheme = scheme
        self.asked = []

    def qat_scheme(self, profile):
        self.asked.append(profile.id)
        return self.scheme


@pytest.fixture(scope="module")
def cnn(digits_dir):
    from edgec.model_io import load_model

    return load_model(digits_dir / "digits_cnn.keras").model


@pytest.fixture(scope="module")
def data(digits_split):
    return Dataset(x=digits_split.x_train, y=digits_split.y_train, source="train", total=len(digits_split.x_train))


@pytest.fixture(scope="module")
def eval_data(digits_split):
    return Dataset(x=digits_split.x_test, y=digits_split.y_test, source="eval", total=len(digits_split.x_test))


def run(model, data, eval_data=None, precision="int8", target=None, progress=None, **options):
    from edgec import profiles

    spec = resolve(BuildOptions(fine_tune="train", **{**FAST, **options}), Precision(precision))
    return optimize(model, data, spec, target=target or RecordingTarget(), profile=profiles.get("rpi5"),
                    eval_data=eval_data, progress=progress)


def kernels(model, step=None) -> dict[str, np.ndarray]:
    """Kernels by layer; with a prune step's record, only those it pruned."""
    pruned = None if step is None else {e["layer"] for e in step["layers"] if e["pruned"]}
    return {layer.name: layer.kernel.numpy() for layer in model.layers
            if hasattr(layer, "kernel") and (pruned is None or layer.name in pruned)}


def assert_first_conv_left_dense(step, model):
    """The digits CNN's first convolution (144 weights, 0.5 % of the prunable ones) stays dense."""
    dense = {e["layer"]: e.get("reason", "") for e in step["layers"] if not e["pruned"]}
    assert list(dense) == ["conv2d"] and "left dense" in dense["conv2d"], dense
    assert (model.get_layer("conv2d").kernel.numpy() == 0).mean() < 0.05
    assert len(kernels(model, step)) == 4


def test_prune_polynomial_reaches_target_and_leaves_the_original_alone(cnn, data, eval_data, capsys):
    before = [w.copy() for w in cnn.get_weights()]
    with Progress(enabled=True) as progress:
        result = run(cnn, data, eval_data, prune=0.6, progress=progress)
    assert all(np.array_equal(a, b) for a, b in zip(before, cnn.get_weights(), strict=True)), "original changed"
    step = result.steps[1]
    assert step["step"] == "prune" and step["schedule"]["kind"] == "polynomial"
    assert step["schedule"]["ramp_epochs"] == 2 and step["fine_tune"]["best_epoch"] >= 2
    for name, k in kernels(result.model, step).items():
        assert (k == 0).mean() == pytest.approx(0.6, abs=0.01), name
    assert_first_conv_left_dense(step, result.model)
    assert not any("prune" in type(layer).__name__.lower() for layer in result.model.layers), "not stripped"
    assert step["accuracy"] > 0.8 and result.accuracy_data == "eval data 'eval'"
    err = capsys.readouterr().err
    assert "fine-tune: prune" in err and "epoch 3/3" in err and "loss" in err and "acc" in err


def test_prune_constant_schedule_and_held_out_accuracy(cnn, data):
    result = run(cnn, data, prune=0.5, prune_schedule="constant", epochs=2)
    step = result.steps[1]
    assert step["schedule"]["kind"] == "constant"
    assert result.accuracy_data.startswith("held-out fine-tune slice (126 samples)")
    for k in kernels(result.model, step).values():
        assert (k == 0).mean() == pytest.approx(0.5, abs=0.01)
    assert_first_conv_left_dense(step, result.model)


def test_prune_2_4_groups_along_input_axis(cnn, data):
    result = run(cnn, data, prune_structure="2:4", precision="fp32", epochs=2)
    for name, k in kernels(result.model, result.steps[1]).items():
        rows = np.moveaxis(k, -2, -1).reshape(-1, k.shape[-2])  # (..., in, out) -> groups along "in"
        pad = (-rows.shape[1]) % 4
        rows = np.pad(rows, ((0, 0), (0, pad)))
        nonzero = (rows.reshape(rows.shape[0], -1, 4) != 0).sum(axis=2)
        assert nonzero.max() <= 2, name


def test_cluster_shares_values_per_kernel(cnn, data):
    result = run(cnn, data, cluster=8, precision="fp32", epochs=1)
    step = result.steps[1]
    assert step["init"] == "linear" and not step["preserve_sparsity"]
    assert {e["layer"] for e in step["layers"] if e["clustered"]} == {"conv2d", "conv2d_1", "conv2d_2", "dense", "logits"}
    for name, k in kernels(result.model).items():
        assert np.unique(k).size <= 8, name


@pytest.mark.slow
def test_distillation_learns_from_the_teacher_not_the_labels(cnn, digits_split, eval_data):
    """With shuffled labels, fine-tuning on labels alone forgets; on soft targets alone it keeps."""
    rng = np.random.default_rng(0)
    noisy = Dataset(x=digits_split.x_train, y=rng.permutation(digits_split.y_train), source="shuffled",
                    total=len(digits_split.x_train))
    labels_only = run(cnn, noisy, eval_data, prune=0.3, prune_schedule="constant", epochs=2, lr=3e-3, distill=False)
    teacher_only = run(cnn, noisy, eval_data, prune=0.3, prune_schedule="constant", epochs=2, lr=3e-3,
                       distill=True, distill_weight=1.0, temperature=2.0)
    assert teacher_only.steps[1]["accuracy"] > 0.85
    assert labels_only.steps[1]["accuracy"] < teacher_only.steps[1]["accuracy"] - 0.2


@pytest.mark.slow
def test_target_qat_scheme_is_used_and_sparsity_kept(cnn, data):
    """A target with its own scheme gets it used; the zeros are put back after every batch."""
    import tensorflow_model_optimization as tfmot

    from edgec.targets.tflite import convert
    from edgec.tflite_model import load

    target = RecordingTarget(tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme())
    result = run(cnn, data, prune=0.5, prune_schedule="constant", qat=True, epochs=2, target=target)
    qat = result.steps[2]
    assert target.asked == ["rpi5"]
    assert qat["scheme"] == "Default8BitQuantizeScheme" and qat["scheme_source"] == "target"
    assert qat["kernels_kept_by_callback"] == 4  # the pruned ones; the first conv stayed dense
    artifact = load(convert(result.model, Precision.INT8, calib=Dataset(data.x[:64], None, "c", 64)))
    sparse = [(artifact.kernel(op).data == 0).mean() for op in artifact.operators
              if artifact.kernel(op) is not None and op.op in ("CONV_2D", "FULLY_CONNECTED")]
    assert len(sparse) == 5 and sorted(sparse)[0] < 0.05 and all(z >= 0.49 for z in sorted(sparse)[1:]), sparse


def test_fine_tune_data_must_fit_the_model(cnn, digits_split):
    from edgec.errors import EdgecError

    bad = Dataset(x=digits_split.x_train[:50], y=digits_split.y_train[:50] + 10, source="bad.npz", total=50)
    with pytest.raises(EdgecError, match="labels in 'bad.npz' range over 10..19, but the model has 10 classes"):
        run(cnn, bad, prune=0.5)
    few = Dataset(x=digits_split.x_train[:5], y=digits_split.y_train[:5], source="few.npz", total=5)
    with pytest.raises(EdgecError, match="has 5 samples; need at least 10"):
        run(cnn, few, prune=0.5)


def test_probability_outputs_are_distilled_in_log_space(cnn, data, eval_data):
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    probs = keras.Model(cnn.input, keras.layers.Softmax(name="probs")(cnn.output))
    result = run(probs, data, eval_data, prune=0.3, prune_schedule="constant", epochs=1, distill=True)
    assert result.data.describe()["model_output"] == "probabilities"
    assert result.data.teacher_train.max() <= 0.0, "log-probabilities stand in for logits"
    assert result.steps[1]["accuracy"] > 0.9


def test_non_classifier_is_refused(cnn, data):
    from edgec.errors import EdgecError
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    features = keras.Model(cnn.input, cnn.get_layer("conv2d").output, name="features")
    with pytest.raises(EdgecError, match=r"single-output classifier with output \(batch, classes\); model 'features'"):
        run(features, data, prune=0.5)
