"""The search space: defaults per target kind, the TOML file and its errors, and drawing
configurations (checked without TensorFlow)."""

from __future__ import annotations

import pytest

from edgec import profiles
from edgec.errors import EdgecError
from edgec.search import space as space_mod

optuna = pytest.importorskip("optuna")


def _write(tmp_path, text: str):
    path = tmp_path / "space.toml"
    path.write_text(text)
    return path


def test_defaults_follow_the_target_kind():
    rpi5 = space_mod.load(None, profiles.get("rpi5"))
    assert rpi5["precision"].values == tuple(profiles.get("rpi5").precisions)
    assert rpi5["cluster"].values == ("none", 8, 16, 32, 64)
    assert rpi5["prune"].kind == "float" and (rpi5["prune"].low, rpi5["prune"].high) == (0.0, 0.9)
    assert "train_epochs" not in rpi5.params
    orin = space_mod.load(None, profiles.get("jetson-orin-nano"))
    assert orin["cluster"].values == ("none",) and "2:4" in orin["prune_structure"].values
    coral = space_mod.load(None, profiles.get("coral-usb"))
    assert coral["precision"].values == ("int8",) and coral["prune_structure"].values == ("none",)
    built = space_mod.load(None, profiles.get("rpi5"), builder=True)
    assert built["train_epochs"].maximum == 27


def test_a_file_replaces_defaults_and_passes_build_options_through(tmp_path):
    path = _write(tmp_path, """
[space]
precision = ["int8"]
cluster = {low = 8, high = 32, step = 8}
lr = {low = 1e-4, high = 1e-2, log = true}
epochs = 3
prune_schedule = ["polynomial", "constant"]

[hyperband]
min_resource = 2
reduction_factor = 2
""")
    s = space_mod.load(path, profiles.get("x86-cpu"))
    assert s["cluster"].kind == "int" and s["cluster"].step == 8
    assert s["lr"].log and s["epochs"].kind == "fixed"
    assert s.extras == ["prune_schedule"]
    assert s.hyperband == space_mod.Hyperband(2, 2)
    assert s.canonical() == space_mod.load(path, profiles.get("x86-cpu")).canonical()


@pytest.mark.parametrize("text, message", [
    ("[space]\nprecision = ['int4']", "precisions of profile 'x86-cpu'"),
    ("[space]\nprune = {low = 0.0, high = 1.5}", "0 <= prune < 1"),
    ("[space]\ncluster = ['none', 1]", "integers 2..256"),
    ("[space]\nquantization = ['qat']\nprecision = ['fp16']", "'ptq' only"),
    ("[space]\nepochs = {low = 0, high = 3}", "integers >= 1"),
    ("[space]\nlr = {low = 0.1, high = 0.01}", "low must not exceed high"),
    ("[space]\nlr = {low = 0.0, high = 0.01, log = true}", "log range needs low > 0"),
    ("[space]\nwidth = [1, 2]", "unknown search parameter 'width'"),
    ("[space]\nout = 'x'", "set by edgec search itself"),
    ("[space]\ntrain_lr = 0.01", "--builder"),
    ("[spaces]\nprune = 0.5", "unknown table(s) spaces"),
    ("[hyperband]\nreduction_factor = 1", "reduction_factor must be an integer >= 2"),
    ("[space]\nprune = {low = 0.1}", "a range is a table with low, high"),
    ("[space\n", "not valid TOML"),
])
def test_bad_spaces_name_the_file_and_the_key(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(EdgecError) as info:
        space_mod.load(path, profiles.get("x86-cpu"))
    assert message in str(info.value)
    assert "space.toml" in str(info.value)


def _draw(space, params):
    trial = optuna.trial.FixedTrial(params)
    return space_mod.sample(trial, space)


def test_fine_tune_settings_are_drawn_only_when_a_step_fine_tunes(tmp_path):
    s = space_mod.load(None, profiles.get("x86-cpu"))
    plain = _draw(s, {"precision": "int8", "prune_structure": "none", "prune": 0.0, "cluster": "none",
                      "quantization": "ptq"})
    assert not plain.compresses and plain.epochs is None
    assert plain.build_options() == {"precision": "int8"}
    assert plain.label() == "int8 ptq"
    fp16 = _draw(s, {"precision": "fp16", "prune_structure": "none", "prune": 0.0, "cluster": "none"})
    assert fp16.label() == "fp16" and not fp16.qat  # quantization is not drawn for fp16
    full = _draw(s, {"precision": "int8", "prune_structure": "none", "prune": 0.8, "cluster": 16,
                     "quantization": "qat", "epochs": 4, "lr": 1e-3, "distill": True})
    assert full.build_options() == {"precision": "int8", "prune": 0.8, "cluster": 16, "qat": True, "epochs": 4,
                                    "lr": 1e-3, "batch_size": 32, "distill": True}
    assert full.label() == "int8 qat prune 0.8 c16 e4 lr 1e-03 distill"
    structured = _draw(s, {"precision": "int8", "prune_structure": "2:4", "cluster": "none", "quantization": "ptq",
                           "epochs": 2, "lr": 1e-3, "distill": False})
    assert structured.prune is None and structured.build_options()["prune_structure"] == "2:4"
    assert space_mod.Config.from_json(full.to_json()) == full
