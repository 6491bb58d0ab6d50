"""The accuracy side of the speed criteria, with full fine-tuning (slow; the latency side is
measured by bench/bench_speed.py, never asserted): --prune-channels 0.5 cuts MACs by at least
45 % within 1.5 points on the ResNet-style net and the residual and separable examples, --low-rank
cuts the MLP's parameters by half within 1.5 points, and channels + QAT stays within the same
budget in the int8 artifact."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

BUDGET = 1.5  # accuracy points against the float model, on 540 held-out digits
FINE_TUNE = {"epochs": 20, "lr": 1e-3, "distill": True}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Float models trained as bench/bench_speed.py trains them, with their data."""
    from edgec.examples import arch_shape, digits, make_model, train
    from edgec.optimize import graph
    from edgec.tfcompat import tf_and_keras

    tf, _ = tf_and_keras()
    tf.config.experimental.enable_op_determinism()
    cache: dict[str, dict] = {}

    def get(arch: str, epochs: int) -> dict:
        if arch not in cache:
            root = tmp_path_factory.mktemp(arch)
            split = digits(0, shape=arch_shape(arch))
            model = make_model(arch)
            train(model, split, epochs=epochs, seed=0)
            graph.recalibrate_batchnorm(model, split.x_train)
            model.save(root / "model.keras")
            np.savez(root / "train.npz", x=split.x_train, y=split.y_train)
            np.savez(root / "eval.npz", x=split.x_test, y=split.y_test)
            np.savez(root / "calib.npz", x=split.x_train[:200])
            cache[arch] = {"model": root / "model.keras", "fine_tune": str(root / "train.npz"),
                           "eval": str(root / "eval.npz"), "calib": str(root / "calib.npz"), "out": root / "dist"}
        return cache[arch]

    return get


def _build(paths, **options):
    import edgec

    return edgec.build(paths["model"], target="rpi5", fine_tune=paths["fine_tune"], eval=paths["eval"],
                       out=paths["out"] / "-".join(f"{k}{v}" for k, v in options.items()), **FINE_TUNE, **options)


@pytest.mark.parametrize("arch, epochs", [("resnet", 15), ("residual", 40), ("separable", 40)])
def test_half_the_channels_cut_macs_within_the_budget(trained, arch, epochs):
    paths = trained(arch, epochs)
    result = _build(paths, precision="fp32", prune_channels=0.5, max_accuracy_drop=BUDGET)
    assert result.passed, result.checks
    assert result.manifest["optimization"]["structure"]["macs"]["cut_percent"] >= 45.0


def test_channels_with_qat_stay_within_the_budget_in_int8(trained):
    paths = trained("residual", 40)
    result = _build(paths, precision="int8", prune_channels=0.5, qat=True, max_accuracy_drop=BUDGET)
    assert result.passed, result.checks


def test_low_rank_halves_the_mlp_within_the_budget(trained):
    paths = trained("mlp", 40)
    result = _build(paths, precision="fp32", low_rank=0.2, max_accuracy_drop=BUDGET)
    assert result.passed, result.checks
    assert result.manifest["optimization"]["structure"]["params"]["cut_percent"] >= 50.0
