"""--custom-objects: the code that registers a model's custom layers, imported before loading
(build, the Python API, edgec.toml, search); QAT names a custom layer it cannot quantize."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

LAYERS = '''
import tf_keras


@tf_keras.utils.register_keras_serializable(package="edgec_custom_test")
class Offset(tf_keras.layers.Layer):
    """Adds a learned per-channel offset."""

    def build(self, input_shape):
        self.beta = self.add_weight(name="beta", shape=(input_shape[-1],), initializer="zeros")

    def call(self, x):
        return x + self.beta
'''
MAKE = '''
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tf_keras as keras
sys.path.insert(0, sys.argv[1])
from offset_layers import Offset
inp = keras.Input((8, 8, 1), name="image")
x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
x = Offset(name="offset")(x)
x = keras.layers.GlobalAveragePooling2D()(x)
m = keras.Model(inp, keras.layers.Dense(3, name="logits")(x))
m.layers[2].set_weights([np.linspace(-0.5, 0.5, 4).astype("float32")])
m.save(os.path.join(sys.argv[1], "offset.keras"))
rng = np.random.default_rng(0)
np.savez(os.path.join(sys.argv[1], "data.npz"), x=rng.random((48, 8, 8, 1), dtype=np.float32), y=rng.integers(0, 3, 48))
'''


@pytest.fixture(scope="module")
def offset_dir(tmp_path_factory) -> Path:
    """offset.keras (a tf-keras model with a registered custom layer), offset_layers.py and
    data.npz, written by a child process: this process has not registered the layer yet."""
    out = tmp_path_factory.mktemp("custom")
    (out / "offset_layers.py").write_text(LAYERS)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", MAKE, str(out)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_custom_layer_loads_with_its_module(offset_dir, tmp_path, cli_runner):
    data = offset_dir / "data.npz"
    args = ("build", offset_dir / "offset.keras", "--target", "rpi5", "--precision", "int8", "--calib", data,
            "--calib-samples", "16", "--eval", data, "--out", tmp_path)
    code, _, err = cli_runner(*args)  # first: the layer is registered nowhere yet
    assert code == 2 and "Traceback" not in err
    assert "--custom-objects" in err and "Offset" in err
    assert not (tmp_path / "rpi5").exists()
    code, _, err = cli_runner(*args, "--custom-objects", offset_dir / "offset_layers.py")
    assert code == 0, err


def test_missing_custom_objects_file_is_refused_before_loading(offset_dir, tmp_path, cli_runner):
    code, _, err = cli_runner("build", offset_dir / "offset.keras", "--target", "rpi5", "--precision", "fp32",
                              "--custom-objects", tmp_path / "nope.py", "--out", tmp_path)
    assert code == 2 and "nope.py' does not exist" in err and "Traceback" not in err


def test_broken_custom_objects_module_is_one_line(tmp_path, offset_dir, cli_runner):
    bad = tmp_path / "bad_layers.py"
    bad.write_text("raise RuntimeError('no GPU here')\n")
    code, _, err = cli_runner("build", offset_dir / "offset.keras", "--target", "rpi5", "--precision", "fp32",
                              "--custom-objects", bad, "--out", tmp_path / "d")
    assert code == 2 and "cannot import it: RuntimeError: no GPU here" in err and "Traceback" not in err


@pytest.mark.slow
def test_qat_names_the_custom_layer_and_the_way_out(offset_dir, tmp_path, cli_runner):
    data = offset_dir / "data.npz"
    args = ("build", offset_dir / "offset.keras", "--target", "rpi5", "--precision", "int8", "--qat",
            "--fine-tune", data, "--epochs", "1", "--custom-objects", offset_dir / "offset_layers.py",
            "--out", tmp_path)
    code, _, err = cli_runner(*args)
    line = [x for x in err.splitlines() if x.strip()][-1]
    assert code == 2 and "Traceback" not in err
    assert "offset" in line and "--qat-skip offset" in line
    code, _, err = cli_runner(*args, "--qat-skip", "offset")
    assert code == 0, err


def test_python_api_and_ci_config_take_custom_objects(offset_dir, tmp_path):
    import edgec
    from edgec.ci.config import load_config

    result = edgec.build(offset_dir / "offset.keras", "x86-cpu", precision="fp32", eval=str(offset_dir / "data.npz"),
                         custom_objects=offset_dir / "offset_layers.py", out=tmp_path / "api")
    assert result.manifest["options"]["custom_objects"] == [str(offset_dir / "offset_layers.py")]
    assert result.verification["outputs"][0]["max_abs_diff"] < 1e-4

    config = offset_dir / "edgec.toml"
    config.write_text('[[model]]\npath = "offset.keras"\ncustom-objects = ["offset_layers.py"]\n'
                      'eval = "data.npz"\n\n[[target]]\nprofile = "x86-cpu"\nprecision = "fp32"\n')
    (row,) = load_config(config, out=tmp_path / "ci").rows
    assert [Path(p) for p in row.options["custom_objects"]] == [offset_dir / "offset_layers.py"]


def test_search_passes_custom_objects_to_every_build(offset_dir, tmp_path):
    from edgec import profiles
    from edgec.errors import EdgecError
    from edgec.search import api, space
    from edgec.search.trial import Context

    request = api.Request(target="x86-cpu", eval=str(offset_dir / "data.npz"), model=offset_dir / "offset.keras",
                          custom_objects=(str(tmp_path / "nope.py"),), out=tmp_path)
    with pytest.raises(EdgecError, match="nope.py' does not exist"):
        api.check(request)
    profile = profiles.get("x86-cpu")
    ctx = Context(profile=profile, space=space.load(None, profile), objectives=["accuracy"], constraints={},
                  device=None, out=tmp_path, seed=0, eval=request.eval, fine_tune=None, calib=None,
                  model=request.model, custom_objects=(str(offset_dir / "offset_layers.py"),))
    config = space.Config(precision="fp32", prune=None, prune_structure=None, cluster=None, qat=False, epochs=None,
                          lr=None, batch_size=None, distill=False, extras={})
    options = ctx.options(config)
    assert options["custom_objects"] == [str(offset_dir / "offset_layers.py")]
    before = ctx.build_key("m", options)
    (offset_dir / "offset_layers.py").write_text(LAYERS + "\n# changed\n")  # other code, another build
    try:
        assert ctx.build_key("m", options) != before
    finally:
        (offset_dir / "offset_layers.py").write_text(LAYERS)
