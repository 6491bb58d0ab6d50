"""Fixtures of the search tests: small labelled digits data (real training, kept short), search
spaces, a measuring setup that repeats a few short agent runs, and the collector fixtures (a real
`edgec serve` and agent on loopback) for the fleet path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _fleet_home(fleet_home):
    """Results, caches and tokens in the test's tmp dir (the fleet fixtures: tests/helpers/fleet.py)."""


FINE_TUNE_SAMPLES = 240
EVAL_SAMPLES = 180


@pytest.fixture(scope="session")
def data(digits_dir, tmp_path_factory) -> dict[str, Path]:
    """The session's trained digits CNN with small fine-tune, eval and training sets."""
    out = tmp_path_factory.mktemp("search-data")
    train = np.load(digits_dir / "train.npz")
    ev = np.load(digits_dir / "eval.npz")
    np.savez(out / "fine_tune.npz", x=train["x"][:FINE_TUNE_SAMPLES], y=train["y"][:FINE_TUNE_SAMPLES])
    np.savez(out / "eval.npz", x=ev["x"][:EVAL_SAMPLES], y=ev["y"][:EVAL_SAMPLES])
    np.savez(out / "train.npz", x=train["x"][:600], y=train["y"][:600])
    return {"model": digits_dir / "digits_cnn.keras", "fine_tune": out / "fine_tune.npz", "eval": out / "eval.npz",
            "calib": digits_dir / "calib.npz", "train": out / "train.npz", "dir": out}


@pytest.fixture
def quick_device():
    """Local measurements: 50 timed inferences per agent run, two or three runs."""
    from edgec.search.device import Device

    return Device(device="local", runs=50, warmup=5, min_runs=2, max_runs=3, rtol=0.05)
