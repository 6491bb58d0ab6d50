"""Profiles are data checked by one schema; errors name the file and the key."""

from __future__ import annotations

import pytest

from edgec import profiles
from edgec.errors import EdgecError

GOOD = """
id = "{id}"
device = "Test board"
target = "tflite"
runtime = "litert"
precisions = ["fp32", "int8"]
default_precision = "int8"
"""


def write(tmp_path, text, name="board"):
    path = tmp_path / f"{name}.toml"
    path.write_text(text.format(id=name))
    return path


def test_bundled_profiles_validate():
    all_ids = [p.id for p in profiles.all_profiles()]
    assert len(all_ids) >= 9
    for p in profiles.all_profiles():
        assert p.default_precision in p.precisions
        if p.target == "tensorrt":
            assert p.tensorrt["compute_capability"] and p.tensorrt["onnx_opset"] > 0
        if p.target == "edgetpu":
            assert p.precisions == ("int8",)


def test_good_profile_file(tmp_path):
    p = profiles.load_file(write(tmp_path, GOOD))
    assert p.id == "board" and p.supports("int8") and not p.supports("fp16")


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, GOOD + 'colour = "red"\n')
    with pytest.raises(EdgecError, match=r"board\.toml: unknown key 'colour'"):
        profiles.load_file(path)


def test_unknown_section_key(tmp_path):
    path = write(tmp_path, GOOD + '[power]\nsensor = "rapl"\nvolts = 5\n')
    with pytest.raises(EdgecError, match=r"unknown key 'power\.volts'"):
        profiles.load_file(path)


@pytest.mark.parametrize("bad, match", [
    ('precisions = ["fp32", "int4"]', r"unknown values \['int4'\]"),
    ('runtime = "magic"', r"key 'runtime' = 'magic': expected one of"),
    ('threads = "four"', r"key 'threads' must be int"),
])
def test_bad_values(tmp_path, bad, match):
    key = bad.split(" =")[0]
    text = "\n".join(line for line in GOOD.splitlines() if not line.startswith(key + " ")) + "\n" + bad + "\n"
    with pytest.raises(EdgecError, match=match):
        profiles.load_file(write(tmp_path, text))


def test_default_must_be_supported(tmp_path):
    text = GOOD.replace('default_precision = "int8"', 'default_precision = "fp16"')
    with pytest.raises(EdgecError, match="default_precision 'fp16' is not in precisions"):
        profiles.load_file(write(tmp_path, text))


def test_id_must_match_file(tmp_path):
    path = tmp_path / "other.toml"
    path.write_text(GOOD.format(id="board"))
    with pytest.raises(EdgecError, match="must match the file name 'other'"):
        profiles.load_file(path)


def test_tensorrt_target_needs_its_table(tmp_path):
    text = GOOD.replace('target = "tflite"', 'target = "tensorrt"')
    with pytest.raises(EdgecError, match=r"needs a \[tensorrt\] table"):
        profiles.load_file(write(tmp_path, text))


def test_unknown_profile_lists_valid_ones():
    with pytest.raises(EdgecError) as info:
        profiles.get("rpi9")
    assert "unknown target 'rpi9'" in str(info.value) and "rpi5" in str(info.value) and "coral-usb" in str(info.value)
