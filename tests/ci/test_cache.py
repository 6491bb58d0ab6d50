"""The content-addressed cache: keys that change with every input, entries verified before reuse."""

from __future__ import annotations

import json

from edgec.ci.cache import Cache, Hashes, data_material, row_key, tool_versions
from edgec.util import sha256_file


def fake_build(root, content=b"tflite bytes"):
    root.mkdir(parents=True)
    (root / "model.tflite").write_bytes(content)
    manifest = {"artifacts": [{"file": "model.tflite", "sha256": sha256_file(root / "model.tflite")}]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_store_verify_restore(tmp_path):
    cache = Cache(tmp_path / "cache")
    build = fake_build(tmp_path / "dist" / "m" / "rpi5")
    assert cache.lookup("ab" * 32) == (None, None)
    cache.store("ab" * 32, build, {"float_tflite_bytes": 123})
    entry, problem = cache.lookup("ab" * 32)
    assert problem is None and entry["meta"]["float_tflite_bytes"] == 123
    dest = tmp_path / "elsewhere" / "rpi5"
    cache.restore("ab" * 32, dest)
    assert sha256_file(dest) == sha256_file(build)


def test_a_corrupt_entry_is_removed_not_trusted(tmp_path):
    cache = Cache(tmp_path / "cache")
    build = fake_build(tmp_path / "b")
    for key, damage in (("01" * 32, lambda d: (d / "model.tflite").write_bytes(b"tampered")),
                        ("02" * 32, lambda d: (d / "model.tflite").unlink()),
                        ("03" * 32, lambda d: (d / "extra.bin").write_bytes(b"x")),
                        ("04" * 32, lambda d: (d.parent / "entry.json").write_text("{not json"))):
        cache.store(key, build, {})
        where = next((tmp_path / "cache").rglob(key))
        damage(where / "build")
        entry, problem = cache.lookup(key)
        assert entry is None and problem, key
        assert not where.exists()


def test_keys_cover_model_data_options_profile_and_versions(tmp_path):
    (tmp_path / "calib.npz").write_bytes(b"calib")
    hashes = Hashes()
    data, why = data_material({"calib": str(tmp_path / "calib.npz"), "eval": None}, hashes)
    assert why is None and data["calib"] == sha256_file(tmp_path / "calib.npz") and data["eval"] is None
    base = dict(model_sha256="m" * 64, data=data, options={"precision": "int8", "seed": 0},
                profile={"id": "rpi5", "threads": 4}, out_dir=tmp_path / "dist/m/rpi5", versions=tool_versions())
    key = row_key(**base)
    assert row_key(**base) == key
    changed = [{"model_sha256": "n" * 64}, {"data": {**data, "calib": "0" * 64}},
               {"options": {"precision": "int8", "seed": 1}}, {"profile": {"id": "rpi5", "threads": 2}},
               {"out_dir": tmp_path / "dist/m/other"}, {"versions": {**base["versions"], "tensorflow": "0.0"}}]
    assert len({row_key(**{**base, **c}) for c in changed} | {key}) == len(changed) + 1
    versions = tool_versions()
    for name in ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "tf2onnx", "onnx",
                 "onnxruntime", "tensorrt", "edgetpu_compiler", "python", "edgec_sources"):
        assert name in versions
    _, why = data_material({"calib": "mypackage.data:batches"}, hashes)
    assert "made by code" in why
