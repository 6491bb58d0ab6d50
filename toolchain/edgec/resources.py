"""Where edgec's data lives: the device profiles, the target rule tables and the input presets.

In a source checkout these are the top-level folders ``profiles/``, ``targets/`` and
``calibration/`` beside ``toolchain/`` (the package tree); an installed wheel carries copies of
them inside the package, under ``edgec/_data/``.
"""

from __future__ import annotations

from pathlib import Path

ROOTS = ("profiles", "targets", "calibration")

_PACKAGED = Path(__file__).resolve().parent / "_data"
_CHECKOUT = Path(__file__).resolve().parents[2]


def data_dir(root: str) -> Path:
    """The folder of one data root (``profiles``, ``targets`` or ``calibration``)."""
    if root not in ROOTS:
        raise ValueError(f"unknown data root '{root}'; valid: {', '.join(ROOTS)}")
    packaged = _PACKAGED / root
    return packaged if packaged.is_dir() else _CHECKOUT / root


def data_file(root: str, name: str) -> Path:
    """A file of one data root, e.g. ``data_file("targets", "edgetpu_ops.json")``."""
    return data_dir(root) / name
