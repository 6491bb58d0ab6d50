"""Fixtures for edgec ci: a project folder (models, data, edgec.toml), the JUnit schema, results
documents made without building."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def write_config(root: Path, text: str, name: str = "edgec.toml") -> Path:
    path = root / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture
def stub_project(tmp_path) -> Path:
    """A folder with a model file and data files that exist but are never loaded: enough for the
    checks that run before TensorFlow (config validation, plans)."""
    (tmp_path / "models").mkdir()
    (tmp_path / "data").mkdir()
    for name in ("models/digits.keras", "models/other.keras", "data/calib.npz", "data/eval.npz", "data/train.npz"):
        (tmp_path / name).write_bytes(b"not loaded")
    return tmp_path


def copy_digits(digits_dir: Path, root: Path, name: str = "digits") -> Path:
    """The trained digits CNN and its data under ROOT/models and ROOT/data."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(digits_dir / "digits_cnn.keras", root / "models" / f"{name}.keras")
    for data in ("calib.npz", "eval.npz", "train.npz"):
        shutil.copy(digits_dir / data, root / "data" / data)
    return root


@pytest.fixture(scope="session")
def junit_schema():
    etree = pytest.importorskip("lxml.etree", reason="validating JUnit XML needs lxml (the dev extra)")
    return etree.XMLSchema(etree.parse(str(HERE / "junit.xsd")))


def validate_junit(schema, text: str):
    from lxml import etree

    doc = etree.fromstring(text.encode())
    assert schema.validate(doc), schema.error_log
    return doc
