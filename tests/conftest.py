"""Shared fixtures: a digits CNN trained once per session, with calibration and eval data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("EDGEC_PROGRESS", "0")

import edgec  # noqa: E402  (sets the Keras environment before TensorFlow loads)


@pytest.fixture(scope="session")
def digits_split():
    from edgec.examples import digits

    return digits(seed=0)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory, digits_split) -> Path:
    """A directory with digits_cnn.keras (trained), calib.npz, eval.npz and train.npz."""
    from edgec.examples import make_model, train

    out = tmp_path_factory.mktemp("digits")
    model = make_model("cnn")
    acc = train(model, digits_split, epochs=25, seed=0)
    assert acc > 0.9, f"reference CNN trained to only {acc:.3f}"
    model.save(out / "digits_cnn.keras")
    np.savez(out / "calib.npz", x=digits_split.x_train)
    np.savez(out / "eval.npz", x=digits_split.x_test, y=digits_split.y_test)
    np.savez(out / "train.npz", x=digits_split.x_train, y=digits_split.y_train)
    return out


@pytest.fixture(scope="session")
def digits_model_path(digits_dir) -> Path:
    return digits_dir / "digits_cnn.keras"


@pytest.fixture(scope="session")
def agent_pyz(tmp_path_factory) -> Path:
    from edgec.agent import bundle

    return Path(bundle.build(str(tmp_path_factory.mktemp("agent") / "edgec-agent.pyz")))


@pytest.fixture(scope="session")
def digits_builds(tmp_path_factory, digits_dir) -> dict[str, Path]:
    """fp32 and int8 x86-cpu builds of the digits CNN (verified on eval data), shared by the agent
    and collector tests, which read them only."""
    out = {}
    for precision in ("fp32", "int8"):
        root = tmp_path_factory.mktemp(f"dist-{precision}")
        result = edgec.build(digits_dir / "digits_cnn.keras", target="x86-cpu", precision=precision,
                             calib=str(digits_dir / "calib.npz"), eval=str(digits_dir / "eval.npz"), out=root)
        out[precision] = result.out_dir
    return out


@pytest.fixture
def cli_runner():
    """Invoke the Click CLI in-process; returns (exit_code, stdout, stderr)."""
    from click.testing import CliRunner

    from edgec.cli import cli

    def invoke(*args: str):
        result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return invoke


# A throwaway PostgreSQL cluster (session) and a fresh database per test: tests/postgres.py.
from tests.postgres import postgres_server, postgres_url  # noqa: E402, F401

# the fleet's fixtures (a collector, agents, builds to measure), for every folder that starts one
pytest_plugins = ["tests.helpers.fleet"]
