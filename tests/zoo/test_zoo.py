"""The conformance zoo: standard architectures, int8, on every target kind.

Each build ends in exit 0 with verification, or exit 1 with the honest reason (the ops an int8
artifact computes in float); never exit 3, never a native crash. Edge TPU ops that stay on the
CPU are reported, not a failure.

``make test`` runs a slice, one model per quirk (depthwise, hard-swish, concat-heavy, grouped
convolution, attention, a Keras 3 file), built in this process with a handful of calibration
samples. ``make conformance`` (``pytest -m zoo tests/zoo``) runs every architecture, each in its
own process, as ``bench/bench_zoo.py`` does.
"""

from __future__ import annotations

import math

import pytest

from tests.zoo.models import ARCHS
from tests.zoo.run import PROFILES, run_in_child

pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'edgec[onnx]'")
pytest.importorskip("tf2onnx", reason="needs the onnx extra")

#: one architecture per quirk
SLICE = {"depthwise": "MobileNetV2", "hard-swish": "MobileNetV3Small", "concat-heavy": "DenseNet121",
         "grouped conv": "RegNetX002", "attention": "TransformerGELU"}

KERAS3_PENDING = "edgec build does not accept Keras 3 files yet"


def assert_conforms(row: dict) -> None:
    """Exit 0 verified, or exit 1 naming its float ops; the target kind's figures reported."""
    where = f"{row['arch']} on {row['profile']}"
    assert row["exit"] in (0, 1), f"{where}: exit {row['exit']}: {row.get('error')}"
    assert row["verified"], f"{where}: not verified"
    for name, sqnr in row["sqnr_db"].items():
        assert sqnr is not None and math.isfinite(sqnr), f"{where}: output {name} SQNR {sqnr}"
    if row["exit"] == 1:
        assert row["float_ops"] > 0 and "float" in row["error"], f"{where}: {row['error']}"
    else:
        assert row["int_share"] == 1.0, f"{where}: {row['float_ops']} float ops passed the check"
    if row["profile"] == "coral-usb":
        assert row["tpu_share"] is not None and 0 <= row["tpu_share"] <= 1
    if row["format"] == "onnx":
        assert row["ops"] > 0


def _slice_cases():
    # DenseNet's Edge TPU build repeats its TFLite conversion (about 45 s here): the zoo covers it
    return [pytest.param(quirk, profile, id=f"{quirk}-{profile}") for quirk in SLICE for profile in PROFILES
            if (quirk, profile) != ("concat-heavy", "coral-usb")]


@pytest.mark.slow
@pytest.mark.parametrize(("quirk", "profile"), _slice_cases())
def test_slice(quirk, profile, zoo_builds):
    assert_conforms({**zoo_builds(SLICE[quirk], profile), "arch": SLICE[quirk]})


@pytest.mark.slow
def test_slice_keras3_file(tmp_path):
    """A Keras 3 ``.keras`` file (made in a child process without TF_USE_LEGACY_KERAS)."""
    rows = run_in_child("MobileNetV2", tmp_path, profiles=("rpi5", "jetson-orin-nano"), keras3=True,
                        calib_samples=8)
    _xfail_until_keras3(rows)
    for row in rows:
        assert_conforms(row)


def _xfail_until_keras3(rows: list[dict]) -> None:
    refused = [r for r in rows if r["exit"] == 2 and "keras 3" in (r.get("error") or "").lower()]
    if refused:
        pytest.xfail(f"{KERAS3_PENDING}: {refused[0]['error'][:200]}")


def _zoo_cases():
    cases = []
    for name, arch in ARCHS.items():
        cases.append(pytest.param(name, False, id=f"{name}-keras2"))
        if arch.keras3:  # a Keras 3 file of each family the Keras 3 saver can write
            cases.append(pytest.param(name, True, id=f"{name}-keras3"))
    return cases


@pytest.mark.zoo
@pytest.mark.parametrize(("name", "keras3"), _zoo_cases())
def test_zoo(name, keras3, tmp_path):
    rows = run_in_child(name, tmp_path, keras3=keras3)
    if keras3:
        _xfail_until_keras3(rows)
    for row in rows:
        assert_conforms(row)
