"""Fixtures for edgec ci: a project folder (models, data, edgec.toml), the JUnit schema, results
documents made without building."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture
def stub_project(tmp_path) -> Path:
    """A folder with a model file and data files that exist but are never loaded: enough for the
    checks that run before TensorFlow (config validation, plans)."""
    (tmp_path / "models").mkdir()
    (tmp_path / "data").mkdir()
    for name in ("models/digits.keras", "models/other.keras", "data/calib.npz", "data/eval.npz", "data/train.npz"):
        (tmp_path / name).write_bytes(b"not loaded")
    return tmp_path


@pytest.fixture(scope="session")
def junit_schema():
    etree = pytest.importorskip("lxml.etree", reason="validating JUnit XML needs lxml (the dev extra)")
    return etree.XMLSchema(etree.parse(str(HERE / "junit.xsd")))
