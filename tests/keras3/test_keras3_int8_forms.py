"""Keras 3's exact GELU, LayerNormalization and GroupNormalization reach LiteRT fully integer through
Keras 3's export, and the exported function computes what Keras 3 computes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.keras3 import HERE
from tests.helpers.litert import run_single


@pytest.fixture(scope="module")
def forms_dir(tmp_path_factory) -> Path:
    """gelu_norm.keras (Dense + exact GELU, LayerNormalization centred and not, GroupNormalization)
    and gelu_norm.npz (inputs and Keras 3's own outputs), written by Keras 3 in a child process."""
    out = tmp_path_factory.mktemp("keras3_forms")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, str(HERE / "make_forms.py"), str(out)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def _ops(path: Path) -> list[tuple[str, set[str]]]:
    """(op name, dtypes of its inputs and outputs) of each op of a TFLite file, read by LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return [(op["op_name"], {tensors[i]["dtype"].__name__ for i in [*op["inputs"], *op["outputs"]] if i >= 0})
            for op in interpreter._get_ops_details()]


def test_keras3_exact_gelu_and_layer_norm_are_integer_in_tflite(forms_dir, tmp_path, cli_runner):
    data = forms_dir / "gelu_norm.npz"
    code, _, err = cli_runner("build", forms_dir / "gelu_norm.keras", "--target", "rpi5", "--precision", "int8",
                              "--calib", data, "--calib-samples", "16", "--eval", data, "--out", tmp_path / "int8")
    assert code == 0, err
    ops = _ops(tmp_path / "int8" / "rpi5" / "model.tflite")
    names = [name for name, _ in ops]
    assert names.count("GELU") == 2  # exact GELU fused into LiteRT's op, both spellings
    assert "NEG" not in names and "DEQUANTIZE" not in names and "QUANTIZE" not in names
    assert not [name for name, dtypes in ops if dtypes & {"float32", "float16"}]

    # the float artifact computes Keras 3's function: the export changes the form, not the numbers
    code, _, err = cli_runner("build", forms_dir / "gelu_norm.keras", "--target", "rpi5", "--precision", "fp32",
                              "--out", tmp_path / "fp32")
    assert code == 0, err
    ref = np.load(data)
    got = run_single(tmp_path / "fp32" / "rpi5" / "model.tflite", ref["x"])
    diff = float(np.abs(got - ref["keras3"]).max())
    print(f"float TFLite vs Keras 3: max abs diff {diff:.3g} (outputs up to {np.abs(ref['keras3']).max():.3g})")
    assert diff <= 1e-5


def test_export_leaves_the_keras3_model_as_it_was(forms_dir):
    from edgec.keras3 import export, load_file

    ref = np.load(forms_dir / "gelu_norm.npz")
    model = load_file(forms_dir / "gelu_norm.keras", "keras", "3")
    signature = export(model)
    exported = np.asarray(next(iter(signature(ref["x"]).values())))
    assert np.array_equal(exported, np.asarray(model(ref["x"], training=False)))
    assert np.allclose(exported, ref["keras3"], atol=1e-6)
    # the normalizations call their own class's methods again after the export
    assert not [layer.name for layer in model._flatten_layers()
                if {"call", "_apply_normalization"} & set(layer.__dict__)]
