"""The speed options (--prune-channels, --low-rank, --low-rank-energy, --sparse-inference) are
checked before TensorFlow loads: bad values and combinations that cannot work are one line."""

from __future__ import annotations

import pytest

from edgec import targets
from edgec.config import BuildOptions, Precision
from edgec.errors import EdgecError
from edgec.optimize import resolve
from edgec.optimize.spec import check_target


def opts(**kw) -> BuildOptions:
    return BuildOptions(**{"fine_tune": "train.npz", **kw})


def test_order_and_record():
    spec = resolve(opts(prune_channels=0.5, channel_criterion="bn", low_rank_energy=0.9, prune=0.5, cluster=16,
                        qat=True), Precision.INT8)
    assert spec.steps == ["channels", "low_rank", "prune", "cluster", "qat"]
    j = spec.to_json()
    assert j["channels"] == {"fraction": 0.5, "criterion": "bn"}
    assert j["low_rank"] == {"rank_fraction": None, "energy": 0.9}
    assert j["sparse_inference"] is None
    assert resolve(opts(prune_channels=0.3), Precision.INT8).channel_criterion == "bn"


def test_sparse_inference_prunes_to_three_quarters_by_default():
    spec = resolve(opts(sparse_inference=True), Precision.FP32)
    assert spec.steps == ["prune"] and spec.prune == 0.75 and spec.sparse_inference
    assert spec.to_json()["sparse_inference"]["converter"] == "EXPERIMENTAL_SPARSITY"
    assert resolve(opts(sparse_inference=True, prune=0.9, prune_schedule="constant"), Precision.FP16).prune == 0.9
    assert resolve(opts(sparse_inference=True, prune_schedule="constant"), Precision.FP32).prune_schedule == "constant"


def test_every_new_option_alone_needs_fine_tune_data():
    for option in ({"prune_channels": 0.5}, {"low_rank": 0.5}, {"sparse_inference": True}):
        with pytest.raises(EdgecError, match="fine-tune the model and need labelled data"):
            resolve(BuildOptions(**option), Precision.FP32)


@pytest.mark.parametrize("options, precision, message", [
    ({"prune_channels": 50}, "int8", "--prune-channels is the share of output channels removed per layer: "
                                     "expected 0 < FRACTION < 1, got 50; did you mean 0.5?"),
    ({"prune_channels": 1.0}, "int8", "expected 0 < FRACTION < 1, got 1.0"),
    ({"prune_channels": 0.5, "channel_criterion": "taylor"}, "int8", "unknown --channel-criterion 'taylor'; "
                                                                     "valid: bn, l1, l2"),
    ({"channel_criterion": "bn", "qat": True}, "int8", "--channel-criterion bn ranks channels for --prune-channels"),
    ({"low_rank": 0.0}, "fp32", "--low-rank is the share of each kernel's rank kept: expected 0 < RANK_FRACTION < 1"),
    ({"low_rank_energy": 1.5}, "fp32", "expected 0 < E < 1, got 1.5"),
    ({"low_rank": 0.5, "low_rank_energy": 0.9}, "fp32", "--low-rank 0.5 and --low-rank-energy 0.9 both choose"),
    ({"sparse_inference": True}, "int8", "XNNPACK's sparse fp32/fp16 kernels, but this build's precision is int8"),
    ({"sparse_inference": True, "qat": True}, "int8", "precision is int8; pass --precision fp32 or fp16"),
    ({"sparse_inference": True}, "dynamic", "precision is dynamic"),
    ({"sparse_inference": True, "prune": 0.5}, "fp32", "at least 2/3 of the 1x1 convolution weights"),
    ({"sparse_inference": True, "prune_structure": "2:4"}, "fp32", "--prune-structure 2:4 and --sparse-inference"),
    ({"sparse_inference": True, "low_rank": 0.5}, "fp32", "--low-rank splits convolutions"),
    ({"distill": True, "fine_tune": None}, "int8", "(or --prune-channels, --low-rank)"),
])
def test_bad_values_and_combinations_are_one_line(options, precision, message):
    with pytest.raises(EdgecError) as info:
        resolve(opts(**options), Precision(precision))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_sparse_inference_is_for_litert_cpu_targets():
    spec = resolve(opts(sparse_inference=True), Precision.FP16)
    check_target(spec, targets.get("tflite"), "rpi5")
    check_target(None, targets.get("tensorrt"), "jetson-nano")
    with pytest.raises(EdgecError, match="profile 'jetson-nano' is a tensorrt target: drop --sparse-inference"):
        check_target(spec, targets.get("tensorrt"), "jetson-nano")


def test_cli_refuses_sparse_inference_for_a_jetson_before_loading(cli_runner, tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(b"never read: the options are refused first")
    code, _, err = cli_runner("build", model, "-t", "jetson-nano", "-p", "fp16", "--fine-tune", "x.npz",
                              "--sparse-inference", "-o", tmp_path / "out")
    assert code == 2 and "is a tensorrt target: drop --sparse-inference" in err
    assert not (tmp_path / "out").exists()
