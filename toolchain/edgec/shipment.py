"""What of a build goes to a device: a build directory's manifest, its files checked against the
manifest's hashes, and which runtime runs which file. Both ``edgec profile`` (:mod:`edgec.measure`)
and the fleet client (:mod:`edgec.fleet.client`) ship builds with it.

The target kind decides what ships at build time and the manifest records it (``shipment``, from
:meth:`edgec.targets.base.Target.shipment`): per runtime, the files, what the agent runs and with
which runtime. A runtime the manifest does not list gets the primary artifact."""

from __future__ import annotations

import dataclasses
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
    """Decide which files to ship and how the agent runs them, as the build's manifest says.

    Raises:
        EdgecError: the manifest lists no artifacts, or a file it names is missing or changed.
    """
    artifacts = manifest.get("artifacts") or []
    if not artifacts:
        raise EdgecError(f"{build_dir / manifest_mod.FILENAME} lists no artifacts; rebuild with 'edgec build'")
    primary = artifacts[0]
    runtime = runtime or manifest.get("runtime") or "auto"
    by_file = {a["file"]: a for a in artifacts}
    declared = (manifest.get("shipment") or {}).get(runtime)
    if declared is None:
        local = record_path(build_dir, primary)
        warnings = [] if "shipment" in manifest else [
            f"{build_dir / manifest_mod.FILENAME} does not say what its build ships (written by an older edgec): "
            f"shipping {primary['file']} alone; rebuild to ship what the {manifest.get('target', '?')} kind needs"]
        return Shipment({primary["file"]: local}, {primary["file"]: primary.get("sha256") or sha256_file(local)},
                        primary["file"], runtime, primary, warnings)
    files: dict[str, Path] = {}
    expected: dict[str, str] = {}
    optional = declared.get("optional") or {}
    for remote, name in {**declared["files"], **optional}.items():
        rec = by_file.get(name)
        local = record_path(build_dir, rec) if rec else build_dir / name
        if not local.is_file():
            if remote in optional:
                continue
            raise EdgecError(f"'{local}', which a {manifest.get('target', '?')} build ships for runtime {runtime}, "
                             "is missing; rebuild")
        files[remote] = local
        expected[remote] = (rec or {}).get("sha256") or sha256_file(local)
    record = by_file.get(declared.get("record") or declared["run"]) or primary
    warnings = [declared["warning"]] if declared.get("warning") else []
    return Shipment(files, expected, declared["run"], declared.get("runtime") or runtime, record, warnings)
