"""What ships is what the target kind recorded in the manifest (``shipment``), file by file."""

from __future__ import annotations

import json

import pytest

from edgec.errors import EdgecError
from edgec.shipment import plan
from edgec.util import sha256_file


def _build(tmp_path, names, shipment=None):
    records = []
    for name in names:
        (tmp_path / name).write_bytes(name.encode())
        records.append({"file": name, "role": "model", "format": "onnx", "sha256": sha256_file(tmp_path / name)})
    manifest = {"runtime": "tensorrt", "target": "tensorrt", "artifacts": records}
    if shipment is not None:
        manifest["shipment"] = shipment
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return manifest


BUNDLE = {"tensorrt": {"files": {"bundle/model.onnx": "model.onnx", "bundle/build.json": "build.json"},
                       "optional": {"bundle/model.engine": "model.engine"}, "run": "bundle", "runtime": "tensorrt",
                       "record": "model.onnx"}}


def test_declared_files_ship_and_optional_ones_when_present(tmp_path):
    m = _build(tmp_path, ["model.onnx"], BUNDLE)
    (tmp_path / "build.json").write_text("{}")
    ship = plan(tmp_path, m)
    assert sorted(ship.files) == ["bundle/build.json", "bundle/model.onnx"] and ship.target == "bundle"
    assert ship.expected["bundle/build.json"] == sha256_file(tmp_path / "build.json") and not ship.warnings
    (tmp_path / "model.engine").write_bytes(b"engine")
    assert "bundle/model.engine" in plan(tmp_path, m).files
    # another runtime gets the primary artifact
    other = plan(tmp_path, m, "onnxruntime")
    assert list(other.files) == ["model.onnx"] and other.runtime == "onnxruntime"


def test_a_missing_declared_file_is_one_clear_error(tmp_path):
    m = _build(tmp_path, ["model.onnx"], BUNDLE)
    with pytest.raises(EdgecError, match=r"build.json', which a tensorrt build ships for runtime tensorrt, is missing"):
        plan(tmp_path, m)


def test_a_manifest_without_a_shipment_ships_its_primary_artifact_and_says_so(tmp_path):
    m = _build(tmp_path, ["model.onnx"])
    ship = plan(tmp_path, m)
    assert list(ship.files) == ["model.onnx"] and ship.runtime == "tensorrt"
    assert "does not say what its build ships" in ship.warnings[0] and "tensorrt kind" in ship.warnings[0]
