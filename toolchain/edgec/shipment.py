"""What of a build goes to a device: a build directory's manifest, its files checked against the
manifest's hashes, and which runtime runs which file. Both ``edgec profile`` (:mod:`edgec.measure`)
and the fleet client (:mod:`edgec.fleet.client`) ship builds with it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from edgec import manifest as manifest_mod
from edgec.errors import EdgecError
from edgec.util import sha256_file


@dataclasses.dataclass
class Shipment:
    """What goes to the device: files (remote name -> local path), what to run, with which runtime."""

    files: dict[str, Path]
    expected: dict[str, str]
    target: str  # path (relative to the working dir) given to the agent
    runtime: str
    record: dict[str, Any]
    warnings: list[str]


def record_path(build_dir: Path, record: dict[str, Any]) -> Path:
    path = build_dir / record["file"]
    if not path.is_file():
        raise EdgecError(f"'{path}' is listed in {build_dir / manifest_mod.FILENAME} but missing; rebuild it")
    actual = sha256_file(path)
    if record.get("sha256") and actual != record["sha256"]:
        raise EdgecError(f"'{path}' has sha256 {actual[:12]}… but the manifest records {record['sha256'][:12]}…; "
                         "it was modified after the build: rebuild it")
    return path


def open_build(build_dir: Path, runtime: str | None, options: dict[str, Any]) -> tuple[dict[str, Any], Shipment]:
    """The build's manifest and what to ship for ``runtime``; ``options['threads']`` defaults to
    the profile's thread count.

    Raises:
        EdgecError: ``build_dir`` is no build directory, or its files changed since the build.
    """
    if not build_dir.is_dir():
        raise EdgecError(f"'{build_dir}' is not a directory; expected a build directory OUT/PROFILE with manifest.json")
    manifest = manifest_mod.read(build_dir)
    ship = plan(build_dir, manifest, runtime)
    if options.get("threads") is None:
        options["threads"] = (manifest.get("profile") or {}).get("threads")
    return manifest, ship


def plan(build_dir: Path, manifest: dict[str, Any], runtime: str | None = None) -> Shipment:
    """Decide which files to ship and how the agent runs them."""
    artifacts = manifest.get("artifacts") or []
    if not artifacts:
        raise EdgecError(f"{build_dir / manifest_mod.FILENAME} lists no artifacts; rebuild with 'edgec build'")
    primary = artifacts[0]
    runtime = runtime or manifest.get("runtime") or "auto"
    warnings: list[str] = []
    by_file = {a["file"]: a for a in artifacts}

    if runtime == "tensorrt":
        if not (build_dir / "build.json").is_file():
            raise EdgecError(f"{build_dir} has no build.json; a TensorRT build bundle is build.json + model.onnx")
        try:
            spec = json.loads((build_dir / "build.json").read_text())
        except (OSError, ValueError) as exc:
            raise EdgecError(f"cannot read {build_dir / 'build.json'}: {exc}; rebuild the TensorRT bundle") from exc
        names = ["build.json", spec.get("onnx", "model.onnx")]
        if (build_dir / "model.engine").is_file():
            names.append("model.engine")
        files, expected = {}, {}
        for name in names:
            rec = by_file.get(name)
            local = record_path(build_dir, rec) if rec else build_dir / name
            if not local.is_file():
                raise EdgecError(f"TensorRT bundle file '{local}' is missing; rebuild")
            files[f"bundle/{name}"] = local
            expected[f"bundle/{name}"] = sha256_file(local)
        record = by_file.get(spec.get("onnx", "model.onnx")) or primary
        return Shipment(files, expected, "bundle", "tensorrt", record, warnings)

    record = primary
    if runtime == "edgetpu":
        compiled = [a for a in artifacts if a.get("role") == "edgetpu_model" or a["file"].endswith("_edgetpu.tflite")]
        if compiled:
            record = compiled[0]
        else:
            runtime = "litert"
            warnings.append("no Edge TPU model in this build (edgetpu_compiler was not run): measuring "
                            f"{primary['file']} on the device's CPU with LiteRT")
    local = record_path(build_dir, record)
    return Shipment({record["file"]: local}, {record["file"]: record.get("sha256") or sha256_file(local)},
                    record["file"], runtime, record, warnings)
