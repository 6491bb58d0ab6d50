"""Keras 3 files (.keras and .h5), taken as they are, and Lambda layers in .keras files.

The Keras 3 files are written by the real Keras 3 (installed with TensorFlow) in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgec.errors import EdgecError
from edgec.model_io import load_model


@pytest.fixture(scope="module")
def keras3_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("keras3")
    code = textwrap.dedent(f"""
        import os
        os.environ["KERAS_BACKEND"] = "tensorflow"
        import numpy as np, keras
        assert keras.__version__.startswith("3"), keras.__version__
        m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
        m.save(r"{out / 'k3.keras'}")
        m.save(r"{out / 'k3.h5'}")
        np.savez(r"{out / 'w.npz'}", *m.get_weights())
        x = np.linspace(0, 1, 64, dtype="float32").reshape(1, 8, 8, 1)
        np.save(r"{out / 'y.npy'}", m.predict(x, verbose=0))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        pytest.skip(f"Keras 3 cannot save here: {proc.stderr[-300:]}")
    return out


@pytest.mark.parametrize("name", ["k3.keras", "k3.h5"])
def test_keras3_files_load_and_compute_what_keras3_computed(keras3_files, name):
    """Keras 3 files are taken as they are (through Keras 3's own export), and the loaded model
    gives Keras 3's outputs; the way out below stays valid for those who prefer tf-keras files."""
    from edgec.model_io import predict

    loaded = load_model(keras3_files / name)
    x = np.linspace(0, 1, 64, dtype="float32").reshape(1, 8, 8, 1)
    (out,) = predict(loaded.model, x)
    np.testing.assert_allclose(out, np.load(keras3_files / "y.npy"), rtol=1e-5, atol=1e-6)


def test_the_way_out_works(keras3_files, tmp_path):
    """Follow the message: same architecture in tf-keras, weights copied, saved as .keras."""
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    m.set_weights(list(np.load(keras3_files / "w.npz").values()))
    m.save(tmp_path / "model.keras")
    loaded = load_model(tmp_path / "model.keras").model
    x = np.linspace(0, 1, 64, dtype="float32").reshape(1, 8, 8, 1)
    np.testing.assert_allclose(loaded(x).numpy(), np.load(keras3_files / "y.npy"), rtol=1e-5, atol=1e-6)


def test_lambda_in_keras_file_says_how_to_trust_it(tmp_path):
    from edgec.tfcompat import tf_and_keras

    _, keras = tf_and_keras()
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inp)
    model = keras.Model(inp, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    model.save(tmp_path / "lam.keras")
    model.save(tmp_path / "lam.h5")
    with pytest.raises(EdgecError) as err:
        load_model(tmp_path / "lam.keras")
    msg = str(err.value)
    assert "holds a Lambda layer with Python code" in msg and "safe_mode=False" in msg and "\n" not in msg
    assert load_model(tmp_path / "lam.h5").model.get_layer("double") is not None
