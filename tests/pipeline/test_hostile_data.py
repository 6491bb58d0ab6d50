"""Hostile data at the point it enters: NaN/Inf, bad labels, damaged archives, image bombs,
endless generators and data functions that exit. Each is one EdgecError naming what was found."""

from __future__ import annotations

import numpy as np
import pytest

from edgec import calibration
from edgec.errors import EdgecError


def _error(spec, shape=(4,), **kw) -> str:
    with pytest.raises(EdgecError) as info:
        calibration.load(spec, shape, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_name_file_sample_and_position(tmp_path, value):
    x = np.random.default_rng(0).random((10, 3, 4)).astype(np.float32)
    x[7, 2, 1] = value
    np.savez(tmp_path / "d.npz", x=x)
    msg = _error(tmp_path / "d.npz", (3, 4), purpose="eval")
    assert "d.npz" in msg and "sample 7" in msg and "position (2, 1)" in msg and str(value) in msg


@pytest.mark.parametrize("y, found", [
    (np.arange(6) + 0.99, "label 0.99 at sample 0 is not a whole number"),
    (np.array(list("abcdef")), "dtype <U1"),
    (np.array([0, 1, np.nan, 2, 3, 4]), "label nan at sample 2"),
    (np.array([[0.5, 0.5]] * 6), "at sample 0 are [0.5, 0.5]"),
    (np.array([[1, 1]] * 6), "expected one-hot rows"),
])
def test_labels_must_be_integers_or_one_hot(tmp_path, y, found):
    np.savez(tmp_path / "d.npz", x=np.zeros((6, 4), np.float32), y=y)
    assert found in _error(tmp_path / "d.npz", purpose="eval")


def test_whole_float_labels_and_one_hot_are_accepted(tmp_path):
    np.savez(tmp_path / "f.npz", x=np.zeros((4, 4)), y=np.array([0.0, 1.0, 2.0, 1.0]))
    assert calibration.load(tmp_path / "f.npz", (4,)).y.tolist() == [0, 1, 2, 1]
    np.savez(tmp_path / "h.npz", x=np.zeros((3, 4)), y=np.eye(3, dtype=np.float32))
    assert calibration.load(tmp_path / "h.npz", (4,)).y.tolist() == [0, 1, 2]


def test_damaged_archives(tmp_path):
    np.savez(tmp_path / "ok.npz", x=np.zeros((50, 4)))
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:200])
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    np.save(tmp_path / "single.npy", np.zeros((3, 4)))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    (tmp_path / "empty.npy").write_bytes(b"")
    assert "empty (0 bytes)" in _error(tmp_path / "empty.npz")
    assert "truncated" in _error(tmp_path / "cut.npz")
    assert "neither a zip nor an .npy header" in _error(tmp_path / "text.npz")
    assert "single .npy array" in _error(tmp_path / "single.npz")
    assert "empty (0 bytes)" in _error(tmp_path / "empty.npy")


def test_image_bomb_is_refused_with_the_limit(tmp_path):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    side = int(np.sqrt(calibration.MAX_IMAGE_PIXELS)) + 16
    Image.new("L", (side, side)).save(tmp_path / "imgs" / "big.png")
    msg = _error(tmp_path / "imgs", (8, 8, 1))
    assert "big.png" in msg and f"{calibration.MAX_IMAGE_PIXELS:,} pixels" in msg


def test_corrupt_image_is_one_line(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    assert "cannot read image" in _error(tmp_path / "imgs", (8, 8, 1))


DATA = '''
import sys
import numpy as np

def endless():
    while True:
        yield np.zeros((5000, 4), np.float32)

def exits():
    sys.exit(0)

def interrupts():
    raise KeyboardInterrupt

def base():
    class Odd(BaseException):
        pass
    raise Odd("odd")

def scalars():
    yield 1.0
'''


@pytest.fixture
def data_module(tmp_path):
    path = tmp_path / "data_fns.py"
    path.write_text(DATA)
    return path


def test_endless_generator_is_bounded(data_module, caplog):
    ds = calibration.load(f"{data_module}:endless", (4,), purpose="eval")
    assert len(ds) == calibration.MAX_SAMPLES
    assert any("more than" in r.getMessage() for r in caplog.records)
    assert len(calibration.load(f"{data_module}:endless", (4,), limit=10)) == 10


@pytest.mark.parametrize("name, found", [("exits", "raised SystemExit(0)"), ("interrupts", "raised KeyboardInterrupt"),
                                         ("base", "raised Odd: odd"), ("scalars", "yielded a scalar")])
def test_data_function_that_exits_is_a_data_error(data_module, name, found):
    msg = _error(f"{data_module}:{name}", purpose="fine-tune")
    assert found in msg and "fine-tune data" in msg


def test_checks_take_one_array_and_its_name():
    x = np.zeros((3, 2), np.float32)
    calibration.check_finite(x, "d.npz")
    x[1, 1] = np.nan
    with pytest.raises(EdgecError, match="input 'image' holds nan at sample 1, position \\(1,\\)"):
        calibration.check_finite(x, "d.npz", "calibration", name="image")
    assert calibration.check_labels(np.array([[0, 1], [1, 0]]), 2, "d.npz").tolist() == [1, 0]


def test_nan_outputs_never_agree_and_never_pass():
    """An artifact that outputs NaN scores no sample (argmax would make NaN a class) and fails its
    build, whatever its accuracy budget says."""
    from edgec.config import BuildOptions
    from edgec.model_io import OutputSpec
    from edgec.pipeline import build_checks
    from edgec.verify import Reference, compare

    rng = np.random.default_rng(0)
    y = np.arange(20) % 4
    float_out = np.eye(4, dtype=np.float32)[y] * 0.9 + 0.025
    ds = calibration.Dataset(x=np.zeros((20, 2), np.float32), y=y, source="eval.npz", total=20)
    spec = OutputSpec(name="probs", key="probs", shape=(4,))
    ref = Reference(ds, [spec], [float_out], 0, 1.0)
    art = float_out + rng.normal(0, 1e-3, float_out.shape).astype(np.float32)
    art[:10] = np.nan
    result = compare(ref, [art], ["probs"])
    result.update(artifact="model.tflite")
    assert result["artifact_accuracy"] == 0.5 and result["agreement"] == 0.5
    assert result["non_finite_outputs"] == ["probs"] and result["outputs"][0]["non_finite_samples"] == 10
    checks = build_checks(BuildOptions(max_accuracy_drop=100.0), result, [])
    assert [c["passed"] for c in checks] == [True, False]
    assert "outputs NaN or Inf on 10 samples of 'probs'" in checks[1]["message"]
