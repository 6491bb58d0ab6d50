"""edgec.toml: rows, option spellings, budgets by scope, and errors naming file, line and key."""

from __future__ import annotations

import dataclasses
import re

import pytest

from edgec.ci.config import ConfigError, load_config, option_kinds
from edgec.config import BuildOptions
from tests.helpers.ci import write_config

GOOD = """
    [[model]]
    name = "digits"
    path = "models/digits.keras"
    calib = "data/calib.npz"
    eval = "data/eval.npz"

    [[model]]
    path = "models/other.keras"
    calib = "data/calib.npz"
    eval = "data/eval.npz"
    fine-tune = "data/train.npz"
    prune = 0.8
    qat = true
    epochs = 3

    [[target]]
    profile = "rpi5"
    precision = "int8"

    [[target]]
    profile = "coral-usb"

    [[target]]
    name = "rpi5-fp32"
    profile = "rpi5"
    precision = "fp32"
    qat = false
    calib-samples = 50

    [budgets]
    max_accuracy_drop = 1.0
    max_bytes = 200_000
    min_edgetpu_op_share = 0.9

    [budgets."digits/coral-usb"]
    min_edgetpu_op_share = 1.0

    [budgets."*/rpi5-fp32"]
    max_bytes = 500_000
"""


def test_rows_options_and_budgets(stub_project):
    cfg = load_config(write_config(stub_project, GOOD), out=stub_project / "dist")
    assert [r.id for r in cfg.rows] == ["digits/rpi5", "digits/coral-usb", "digits/rpi5-fp32",
                                        "other/rpi5", "other/coral-usb", "other/rpi5-fp32"]
    rows = {r.id: r for r in cfg.rows}
    # paths are relative to the config file; each row builds into OUT/MODEL/TARGET
    assert rows["digits/rpi5"].plan.options.calib == str(stub_project / "data/calib.npz")
    assert rows["digits/rpi5-fp32"].out_dir == stub_project / "dist" / "digits" / "rpi5-fp32"
    # the model's options, overridden by the target's
    other = rows["other/rpi5"].plan
    assert other.options.prune == 0.8 and other.options.qat and other.options.epochs == 3
    assert other.spec is not None and other.spec.steps == ["prune", "qat"]
    fp32 = rows["other/rpi5-fp32"].plan.options
    assert fp32.prune == 0.8 and not fp32.qat and fp32.calib_samples == 50
    assert rows["other/rpi5-fp32"].plan.precision.value == "fp32"
    assert rows["digits/coral-usb"].plan.precision.value == "int8"  # the profile's default
    # budgets: general, then */TARGET, then MODEL/TARGET; the Edge TPU share only where it applies
    assert rows["digits/coral-usb"].budgets == {"max_accuracy_drop": 1.0, "max_bytes": 200_000,
                                                "min_edgetpu_op_share": 1.0}
    assert rows["other/coral-usb"].budgets["min_edgetpu_op_share"] == 0.9
    assert rows["digits/rpi5"].budgets == {"max_accuracy_drop": 1.0, "max_bytes": 200_000}
    assert rows["other/rpi5-fp32"].budgets["max_bytes"] == 500_000
    assert [r.id for r in cfg.select(["*/coral-usb"])] == ["digits/coral-usb", "other/coral-usb"]
    with pytest.raises(Exception, match="--only nope/x matches no row"):
        cfg.select(["nope/x"])


def test_every_build_option_is_a_config_key():
    """A new `edgec build` option is a config key without touching the config code."""
    kinds = option_kinds()
    fields = {f.name for f in dataclasses.fields(BuildOptions)} - {"out", "max_accuracy_drop"}
    assert set(kinds) == fields
    assert kinds["qat_skip"] == "strings" and kinds["mean"] == "numbers" and kinds["calib_samples"] == "int"
    assert kinds["prune"] == "float" and kinds["qat"] == "bool" and kinds["precision"] == "str"


def line_of(path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


@pytest.mark.parametrize("text, needle, message", [
    ("""
     [[model]]
     path = "models/digits.keras"
     prunee = 0.5
     [[target]]
     profile = "rpi5"
     """, "prunee", r"\[\[model\]\] #1: unknown key 'prunee'; valid keys: .*fine-tune"),
    ("""
     [[model]]
     path = "models/digits.keras"
     [[target]]
     profile = "rpi5"
     [[target]]
     profile = "x86-cpu"
     epochs = "ten"
     """, 'epochs = "ten"', r"\[\[target\]\] #2: key 'epochs' must be an integer, got str 'ten'"),
    ("""
     [[model]]
     path = "models/digits.keras"
     max-accuracy-drop = 1
     [[target]]
     profile = "rpi5"
     """, "max-accuracy-drop", r"not a config key: set it in \[budgets\]"),
    ("""
     [[model]]
     path = "models/digits.keras"
     calib = "data/calib.npz"
     [[target]]
     profile = "rpi5"
     [budgets]
     max_bytes = 1000
     max_latency = 5
     """, "max_latency = 5", r"unknown budget 'max_latency'; valid: .*max_latency_p90_ms"),
    ("""
     [[model]]
     path = "models/digits.keras"
     calib = "data/calib.npz"
     [[target]]
     profile = "rpi5"
     [budgets."digits/coral"]
     max_bytes = 1000
     """, '[budgets."digits/coral"]', r"names no row; .*rows: digits/rpi5"),
    ("""
     [[model]]
     path = "models/digits.keras"
     calib = "data/calib.npz"
     [[target]]
     profile = "coral-usb"
     [[target]]
     profile = "coral-usb"  # again
     """, "# again", r"\[\[target\]\] #2: target name 'coral-usb' is already used by \[\[target\]\] #1 \(give each"),
    ("""
     [[model]]
     path = "models/digits.keras"
     calib = "data/calib.npz"
     [[target]]
     name = "tpu"
     profile = "coral-usb"
     precision = "fp32"
     """, 'precision = "fp32"', r"row digits/tpu: the Edge TPU runs only full-integer 8-bit models"),
    ("""
     [[model]]
     path = "models/digits.keras"
     calib = "data/calib.npz"
     [[target]]
     profile = "rpi5"
     [budgets]
     max_accuracy_drop = 1.0
     """, "max_accuracy_drop", r"budget 'max_accuracy_drop' of row digits/rpi5 needs labelled eval data"),
    ("""
     [[model]]
     path = "models/digits.keras"
     calib = "data/calib.npz"
     [[target]]
     profile = "rpi5"
     [budgets."digits/rpi5"]
     min_edgetpu_op_share = 1.0
     """, "min_edgetpu_op_share", r"applies to edgetpu targets; digits/rpi5 is a tflite target"),
    ("""
     [[model]]
     path = "models/digits.keras"
     calib = "data/calib.npz"
     [[target]]
     profile = "rpi5"
     [[target]]
     profile = "coral-usb"
     [budgets."*/rpi5"]
     min_edgetpu_op_share = 1.0
     """, "min_edgetpu_op_share", r"applies to edgetpu targets; digits/rpi5 is a tflite target"),
    ("""
     [[model]]
     path = "models/digits.keras"
     calib = "data/calib.npz"
     [[target]]
     profile = "rpi5"
     [budgets]
     min_edgetpu_op_share = 2
     """, "min_edgetpu_op_share", r"expected a share between 0 and 1"),
    ("""
     [[model]]
     path = "models/digits.keras"
     [[target]]
     profile = "rpi5"
     prune = 80
     fine-tune = "data/train.npz"
     """, "prune = 80", r"expected 0 < SPARSITY < 1, got 80.0; did you mean 0.8"),
])
def test_errors_name_file_line_and_key(stub_project, text, needle, message):
    path = write_config(stub_project, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert text.startswith(f"{path}:{line_of(path, needle)}: "), text
    assert re.search(message, text), text
    assert info.value.exit_code == 2


def test_toml_syntax_error_has_line_and_column(stub_project):
    path = write_config(stub_project, '[[model]]\npath = "models/digits.keras"\nprune = = 0.5\n')
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:3:\d+: not valid TOML"):
        load_config(path)


def test_missing_config_and_cli_exit_code(tmp_path, cli_runner):
    code, _, err = cli_runner("ci", tmp_path / "edgec.toml")
    assert code == 2 and "no such config file" in err
    write_config(tmp_path, '[[model]]\npath = "nope.keras"\n[[target]]\nprofile = "rpi5"\nprecision = "fp32"\n')
    code, _, err = cli_runner("ci", tmp_path / "edgec.toml", "--no-cache")
    assert code == 2 and "edgec.toml:2: row nope/rpi5: model" in err and "does not exist" in err
    code, _, err = cli_runner("ci", "plan", tmp_path / "edgec.toml")
    assert code == 2 and "does not exist" in err
