"""Compression options are checked before TensorFlow loads: one clear line, exit 2, nothing written."""

from __future__ import annotations

import pytest

from edgec.config import BuildOptions, Precision
from edgec.errors import EdgecError
from edgec.optimize import PruneSchedule, resolve


def opts(**kw) -> BuildOptions:
    return BuildOptions(**{"fine_tune": "train.npz", **kw})


def test_nothing_requested_is_no_spec():
    assert resolve(BuildOptions(), Precision.INT8) is None


def test_defaults_are_resolved_and_recorded():
    spec = resolve(opts(prune=0.8, cluster=16, qat=True, distill=True), Precision.INT8)
    assert spec.steps == ["prune", "cluster", "qat"]
    assert spec.prune_schedule is PruneSchedule.POLYNOMIAL and spec.prune_structure is None
    assert spec.temperature == 4.0 and spec.distill_weight == 0.5
    j = spec.to_json()
    assert j["prune"] == {"sparsity": 0.8, "schedule": "polynomial", "structure": None}
    assert j["cluster"] == {"clusters": 16} and j["distill"]["temperature"] == 4.0
    assert j["fine_tune"]["epochs"] == {"prune": 10, "cluster": 10, "qat": 10}


def test_qat_starts_low_on_a_converged_model():
    """QAT alone or after channel surgery / low-rank (converged at the end of their decay) starts at
    1e-4; after pruning or clustering at 1e-3; --lr sets every step."""
    lr = lambda **kw: resolve(opts(qat=True, **kw), Precision.INT8).to_json()["fine_tune"]["lr"]  # noqa: E731
    assert lr() == {"qat": 1e-4}
    assert lr(prune_channels=0.5) == {"channels": 3e-3, "qat": 1e-4}
    assert lr(low_rank=0.5) == {"low_rank": 3e-3, "qat": 1e-4}
    assert lr(prune_channels=0.5, prune=0.8) == {"channels": 3e-3, "prune": 1e-3, "qat": 1e-3}
    assert lr(cluster=16) == {"cluster": 1e-3, "qat": 1e-3}
    assert lr(prune_channels=0.5, lr=2e-3) == {"channels": 2e-3, "qat": 2e-3}


def test_structural_steps_train_longer_unless_epochs_are_given():
    spec = resolve(opts(prune_channels=0.5, prune=0.5), Precision.FP32)
    assert spec.to_json()["fine_tune"]["epochs"] == {"channels": 20, "prune": 10}
    spec = resolve(opts(low_rank=0.5, prune_channels=0.5, prune=0.5, epochs=3), Precision.FP32)
    assert {spec.epochs_for(step) for step in spec.steps} == {3}


def test_structure_sets_half_sparsity():
    spec = resolve(opts(prune_structure="2:4"), Precision.FP32)
    assert spec.prune == 0.5 and spec.prune_structure == (2, 4) and spec.prune_schedule is None
    assert resolve(opts(prune_structure="2:4", prune=0.5), Precision.FP32).prune == 0.5


@pytest.mark.parametrize("options, precision, message", [
    ({"prune": 0.8, "fine_tune": None}, "int8", "--prune fine-tune the model and need labelled data: pass --fine-tune"),
    ({"qat": True, "cluster": 8, "fine_tune": None}, "int8", "--cluster --qat fine-tune the model"),
    ({"prune": 80}, "int8", "expected 0 < SPARSITY < 1, got 80; did you mean 0.8?"),
    ({"prune": 1.0}, "int8", "expected 0 < SPARSITY < 1, got 1.0"),
    ({"prune": 0.0}, "int8", "expected 0 < SPARSITY < 1, got 0.0"),
    ({"prune": -0.2}, "int8", "expected 0 < SPARSITY < 1, got -0.2"),
    ({"prune_structure": "1:4"}, "int8", "unknown --prune-structure '1:4'; valid: 2:4"),
    ({"prune_structure": "2:4", "prune": 0.8}, "int8", "sets the sparsity to 0.5; drop --prune 0.8"),
    ({"prune_structure": "2:4", "prune_schedule": "constant"}, "int8", "applies to unstructured --prune only"),
    ({"prune": 0.5, "prune_schedule": "cubic"}, "int8", "unknown --prune-schedule 'cubic'; valid: constant, polynomial"),
    ({"prune_schedule": "constant", "qat": True}, "int8", "--prune-schedule constant needs --prune"),
    ({"cluster": 1}, "int8", "expected 2..256, got 1"),
    ({"cluster": 300}, "int8", "expected 2..256, got 300"),
    ({"qat": True}, "fp16", "--qat trains the model for int8 inference, but this build's precision is fp16"),
    ({"qat_skip": ("conv2d",)}, "int8", "--qat-skip conv2d only applies with --qat"),
    ({"temperature": 2.0, "qat": True, "distill": False}, "int8", "drop --no-distill or --temperature"),
    ({"distill": True}, "int8", "--distill recovers accuracy while compressing; add --prune, --cluster or --qat"),
    ({}, "int8", "--fine-tune data is used by the compression steps"),
    ({"qat": True, "epochs": 0}, "int8", "--epochs must be at least 1, got 0"),
    ({"qat": True, "lr": 0.0}, "int8", "--lr must be positive"),
    ({"qat": True, "batch_size": 0}, "int8", "--batch-size must be at least 1"),
    ({"qat": True, "distill": True, "temperature": -1.0}, "int8", "--temperature must be positive"),
    ({"qat": True, "distill": True, "distill_weight": 1.5}, "int8", "expected 0..1, got 1.5"),
])
def test_bad_options(options, precision, message):
    with pytest.raises(EdgecError) as err:
        resolve(opts(**options), Precision(precision))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("args, message", [
    (["--prune", "80"], "did you mean 0.8?"),
    (["--qat"], "--qat fine-tune the model and need labelled data: pass --fine-tune DATA"),
    (["--cluster", "1", "--fine-tune", "{train}"], "--cluster is the number of shared values per kernel"),
    (["--qat", "--precision", "fp32", "--fine-tune", "{train}"], "pass --precision int8 or drop --qat"),
    (["--prune-structure", "3:4"], "Invalid value for '--prune-structure'"),
    (["--prune", "0.5", "--fine-tune", "missing.npz"], "--fine-tune data 'missing.npz' does not exist"),
])
def test_cli_rejects_bad_compression_flags_in_one_line(digits_dir, cli_runner, tmp_path, args, message):
    args = [a.format(train=digits_dir / "train.npz") for a in args]
    code, out, err = cli_runner("build", digits_dir / "digits_cnn.keras", "--target", "rpi5",
                                "--calib", digits_dir / "calib.npz", "--out", tmp_path / "d", *args)
    assert code == 2, (out, err)
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "d").exists()


def test_int8_without_calib_is_fine_for_qat_only(digits_dir):
    """The TFLite target asks for --calib for int8 unless QAT has fine-tune inputs to calibrate with."""
    from edgec import profiles, targets

    target = targets.get("tflite")
    profile = profiles.get("rpi5")
    with pytest.raises(EdgecError, match="or --qat with --fine-tune DATA"):
        target.check(profile, Precision.INT8, BuildOptions())
    target.check(profile, Precision.INT8, opts(qat=True))
    with pytest.raises(EdgecError, match="needs representative data"):
        target.check(profile, Precision.INT8, opts(prune=0.5))
