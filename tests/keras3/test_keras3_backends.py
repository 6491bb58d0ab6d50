"""Keras 3 files written on the JAX backend (and on PyTorch, by what its files hold).

What Keras 3 writes does not depend on the backend (keras/src/saving/saving_lib.py): a ``.keras``
file's ``config.json``, ``metadata.json`` (Keras version and date, no backend) and
``model.weights.h5`` have the same keys and the same weight layouts on every backend (a Conv2D kernel
is (kh, kw, in, out) on PyTorch too: the backend transposes in its conv op, not in the variable).
A legacy ``.h5`` file (keras/src/legacy/saving/legacy_h5_format.py) records the backend in its
``backend`` attribute; that is the only difference, and what the manifest's ``saved_backend`` reads.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.keras3 import HERE
from tests.helpers.litert import run_single


def _manifest(out: Path, profile: str) -> dict:
    return json.loads((out / profile / "manifest.json").read_text())


@pytest.fixture(scope="module")
def jax_dir(tmp_path_factory) -> Path:
    """model.keras, model.h5 and data.npz (inputs, and Keras 3's outputs on JAX) from a child process
    on the JAX backend."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (pip install 'jax[cpu]': jax and jaxlib 0.10.2, an 89 MB download, "
                    "380 MB installed; not in the default install)")
    made = tmp_path_factory.mktemp("keras3_jax")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, str(HERE / "make_backend.py"), "jax", str(made)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return made


@pytest.mark.parametrize("name", ["model.keras", "model.h5"])
def test_keras3_file_written_on_jax_builds(jax_dir, tmp_path, cli_runner, name):
    made = jax_dir
    data = made / "data.npz"
    code, _, err = cli_runner("build", made / name, "--target", "rpi5", "--precision", "fp32", "--eval", data,
                              "--out", tmp_path / "fp32")
    assert code == 0, err
    keras = _manifest(tmp_path / "fp32", "rpi5")["source"]["keras"]
    assert keras["path"] == "export" and keras["backend"] == "tensorflow"
    # a .keras file does not say which backend wrote it; a .h5 file does
    assert keras["saved_backend"] == ("jax" if name.endswith(".h5") else None)
    ref = np.load(data)
    diff = float(np.abs(run_single(tmp_path / "fp32" / "rpi5" / "model.tflite", ref["x"]) - ref["reference"]).max())
    print(f"{name}: TFLite on TensorFlow vs Keras 3 on JAX, max abs diff {diff:.3g}")
    assert diff <= 1e-4 * max(1.0, float(np.abs(ref["reference"]).max()))
    code, _, err = cli_runner("build", made / name, "--target", "rpi5", "--precision", "int8", "--calib", data,
                              "--calib-samples", "16", "--out", tmp_path / "int8")
    assert code == 0, err


def test_keras3_h5_written_on_torch_records_its_backend(keras3_dir, tmp_path, cli_runner):
    """A .h5 file as the PyTorch backend writes it: the TensorFlow backend's file with the backend
    attribute PyTorch writes (the weights and config are the same bytes on both)."""
    import h5py

    path = tmp_path / "torch.h5"
    shutil.copy(keras3_dir / "functional.h5", path)
    with h5py.File(path, "r+") as f:
        assert f.attrs["backend"] in ("tensorflow", b"tensorflow")
        f.attrs["backend"] = b"torch"  # legacy_h5_format writes backend.backend().encode("utf8")
    data = keras3_dir / "data.npz"
    code, _, err = cli_runner("build", path, "--target", "rpi5", "--precision", "fp32", "--eval", data,
                              "--out", tmp_path / "out")
    assert code == 0, err
    m = _manifest(tmp_path / "out", "rpi5")
    assert m["source"]["keras"]["saved_backend"] == "torch"
    assert m["verification"]["outputs"][0]["relative_max_abs_error"] < 1e-5
