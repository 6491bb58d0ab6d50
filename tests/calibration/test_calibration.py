"""Data loaders: .npz, .npy, image folders, module:function; shape checks and deterministic sampling."""

from __future__ import annotations

import numpy as np
import pytest

from edgec import calibration
from edgec.errors import EdgecError


def test_npz_with_labels(tmp_path):
    x = np.random.rand(30, 8, 8, 1).astype(np.float32)
    y = np.arange(30) % 10
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = calibration.load(tmp_path / "d.npz", (8, 8, 1))
    assert ds.x.shape == (30, 8, 8, 1) and ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.y, y)


def test_one_hot_labels_become_indices(tmp_path):
    y = np.eye(10)[np.arange(20) % 10]
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 4)), y=y)
    ds = calibration.load(tmp_path / "d.npz", (4,))
    np.testing.assert_array_equal(ds.y, np.arange(20) % 10)


def test_npy_and_none_dims(tmp_path):
    np.save(tmp_path / "d.npy", np.ones((5, 16, 3)))
    ds = calibration.load(tmp_path / "d.npy", (None, 3))
    assert ds.y is None and len(ds) == 5


def test_sampling_is_deterministic(tmp_path):
    x = np.arange(1000, dtype=np.float32).reshape(1000, 1)
    np.save(tmp_path / "d.npy", x)
    a = calibration.load(tmp_path / "d.npy", (1,), limit=50, seed=3)
    b = calibration.load(tmp_path / "d.npy", (1,), limit=50, seed=3)
    c = calibration.load(tmp_path / "d.npy", (1,), limit=50, seed=4)
    assert len(a) == 50 and a.total == 1000
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)


def test_shape_mismatch_says_expected_and_received(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((4, 28, 28)))
    with pytest.raises(EdgecError) as info:
        calibration.load(tmp_path / "d.npy", (8, 8, 1), purpose="calibration")
    msg = str(info.value)
    assert "shape (28, 28)" in msg and "expects (8, 8, 1)" in msg


def test_image_folder_with_classes(tmp_path):
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(3):
            arr = np.full((20, 30, 3), 255 if label == "dog" else 0, dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / label / f"{i}.png")
    ds = calibration.load(tmp_path, (10, 12, 3), purpose="eval")
    assert ds.x.shape == (6, 10, 12, 3)
    assert ds.x.min() >= 0 and ds.x.max() <= 1
    np.testing.assert_array_equal(ds.y, [0, 0, 0, 1, 1, 1])
    assert ds.x[3:].min() == pytest.approx(1.0)


def test_flat_image_folder_grayscale(tmp_path):
    from PIL import Image

    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(tmp_path / f"{i}.jpg")
    ds = calibration.load(tmp_path, (8, 8, 1))
    assert ds.x.shape == (4, 8, 8, 1) and ds.y is None
    assert ds.x.mean() == pytest.approx(128 / 255, abs=0.01)


def test_module_function(tmp_path):
    (tmp_path / "mydata.py").write_text(
        "import numpy as np\n"
        "def batches():\n"
        "    for i in range(3):\n"
        "        yield np.full((4, 2), i, np.float32)\n"
        "def pairs():\n"
        "    yield np.zeros((2, 2)), np.array([1, 2])\n"
        "def broken():\n"
        "    raise RuntimeError('no camera')\n"
    )
    ds = calibration.load(f"{tmp_path}/mydata.py:batches", (2,))
    assert len(ds) == 12 and ds.y is None
    ds = calibration.load(f"{tmp_path}/mydata.py:pairs", (2,))
    np.testing.assert_array_equal(ds.y, [1, 2])
    with pytest.raises(EdgecError, match="raised RuntimeError: no camera"):
        calibration.load(f"{tmp_path}/mydata.py:broken", (2,))
    with pytest.raises(EdgecError, match="has no function 'nope'"):
        calibration.load(f"{tmp_path}/mydata.py:nope", (2,))


def test_importable_module_function(monkeypatch, tmp_path):
    (tmp_path / "edgec_test_data_mod.py").write_text("import numpy as np\ndef f():\n    return [np.ones((3, 5))]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert len(calibration.load("edgec_test_data_mod:f", (5,))) == 3


@pytest.mark.parametrize("name, content, match", [
    ("missing.npz", None, "does not exist"),
    ("d.npz", "noarray", "has no array 'x'"),
    ("d.txt", "hello", "unknown format"),
    ("d.npy", "garbage", "cannot read"),
])
def test_bad_data(tmp_path, name, content, match):
    path = tmp_path / name
    if content == "noarray":
        np.savez(path, images=np.zeros((2, 2)))
    elif content is not None:
        path.write_text(content)
    with pytest.raises(EdgecError, match=match):
        calibration.load(path, (2,))


def test_labels_required(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((3, 2)))
    with pytest.raises(EdgecError, match="has no labels"):
        calibration.load(tmp_path / "d.npy", (2,), purpose="eval", need_labels=True)


def test_the_loaders_build_on_the_checks_without_importing_the_package_back():
    """``edgec.calibration`` (the entry point) imports its modules; none of them imports it back
    (imports inside functions counted), so the package and its modules form no cycle."""
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (the dev extra)")
    graph = grimp.build_graph("edgec", cache_dir=None)
    modules = sorted(m for m in graph.modules if m.startswith("edgec.calibration."))
    assert {"edgec.calibration.data", "edgec.calibration.several", "edgec.calibration.inputs"} <= set(modules)
    back = {m: graph.find_shortest_chain(importer=m, imported="edgec.calibration") for m in modules}
    assert not {m: chain for m, chain in back.items() if chain}
    assert calibration.Dataset is calibration.data.Dataset and calibration.MAX_SAMPLES == calibration.data.MAX_SAMPLES
