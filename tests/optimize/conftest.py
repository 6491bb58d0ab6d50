"""Fixtures for the compression tests: small models trained once per session, one build helper.

The digits CNN and its data come from ``tests/conftest.py`` (``digits_dir``). The residual and
separable nets and a CNN with layers QAT cannot annotate are trained here for a few epochs:
enough for the structural checks (zeros, shared values, 2:4 groups, which layers stay float);
the accuracy criteria are measured by ``bench/bench_compression.py`` with full fine-tuning.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.optimize import FAST, unfriendly_model


class _TrainedOnFirstUse(dict):
    """arch -> model path, training an architecture the first time a test asks for it."""

    def __init__(self, cnn: Path, split, out: Path):
        super().__init__(cnn=cnn)
        self.split, self.out = split, out

    def __missing__(self, arch: str) -> Path:
        from edgec.examples import make_model, train

        model = make_model(arch)
        acc = train(model, self.split, epochs=15, seed=0)  # BN statistics settle by ~15
        assert acc > 0.8, f"{arch} trained to only {acc:.3f}"
        self[arch] = self.out / f"digits_{arch}.keras"
        model.save(self[arch])
        return self[arch]


@pytest.fixture(scope="session")
def arch_paths(digits_dir, digits_split, tmp_path_factory) -> dict[str, Path]:
    """digits_dir's CNN plus the residual and separable nets of edgec.examples, briefly trained
    (each the first time a test uses it)."""
    return _TrainedOnFirstUse(digits_dir / "digits_cnn.keras", digits_split, tmp_path_factory.mktemp("archs"))


@pytest.fixture(scope="session")
def unfriendly_path(digits_split, tmp_path_factory) -> Path:
    """The unfriendly CNN, trained, saved as .h5 (a Lambda loads from .h5 without a trust flag)."""
    from edgec.examples import train
    from edgec.tfcompat import tf_and_keras

    tf, keras = tf_and_keras()
    model = unfriendly_model(keras, tf)
    acc = train(model, digits_split, epochs=10, seed=0)
    assert acc > 0.8, f"unfriendly CNN trained to only {acc:.3f}"
    path = tmp_path_factory.mktemp("unfriendly") / "digits_unfriendly.h5"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def build_with(digits_dir, tmp_path_factory):
    """``build_with(model, target=..., **options)``: an edgec build fine-tuned on train.npz and
    verified on eval.npz, into a fresh output directory."""
    import edgec

    def run(model, target: str = "rpi5", **options):
        options = {"fine_tune": str(digits_dir / "train.npz"), "eval": str(digits_dir / "eval.npz"), **FAST,
                   "out": tmp_path_factory.mktemp("dist"), **options}
        return edgec.build(model, target=target, **options)

    return run


@pytest.fixture(scope="session")
def speed_models(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """The MobileNetV2-style net (32x32 RGB digits, XNNPACK's sparse layout) and the MLP of
    edgec.examples, briefly trained, each with its own train.npz / eval.npz."""
    import numpy as np

    from edgec.examples import arch_shape, digits, make_model, train

    out = {}
    for arch, epochs in (("mobilenet", 4), ("mlp", 10)):
        root = tmp_path_factory.mktemp(arch)
        split = digits(0, shape=arch_shape(arch))
        model = make_model(arch)
        acc = train(model, split, epochs=epochs, seed=0)
        assert acc > 0.8, f"{arch} trained to only {acc:.3f}"
        model.save(root / f"digits_{arch}.keras")
        np.savez(root / "train.npz", x=split.x_train, y=split.y_train)
        np.savez(root / "eval.npz", x=split.x_test, y=split.y_test)
        out[arch] = {"model": root / f"digits_{arch}.keras", "fine_tune": root / "train.npz",
                     "eval": root / "eval.npz"}
    return out
