"""edgec ci test helpers: edgec.toml files, the digits project layout, JUnit validation."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path


def write_config(root: Path, text: str, name: str = "edgec.toml") -> Path:
    path = root / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def copy_digits(digits_dir: Path, root: Path, name: str = "digits") -> Path:
    """The trained digits CNN and its data under ROOT/models and ROOT/data."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(digits_dir / "digits_cnn.keras", root / "models" / f"{name}.keras")
    for data in ("calib.npz", "eval.npz", "train.npz"):
        shutil.copy(digits_dir / data, root / "data" / data)
    return root


def validate_junit(schema, text: str):
    from lxml import etree

    doc = etree.fromstring(text.encode())
    assert schema.validate(doc), schema.error_log
    return doc
