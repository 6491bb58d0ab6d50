"""``edgec profile``: run the device agent on a build's artifact and keep its report.

The artifact comes from ``OUT/PROFILE/manifest.json`` (``artifacts[0]`` is the primary one). A
TensorRT build ships its bundle (``build.json`` + ``model.onnx`` + ``model.engine`` when built);
an Edge TPU build ships ``model_edgetpu.tflite`` when it was compiled, else its int8 model runs
on the device's CPU (said in the report's warnings).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from edgec import manifest as manifest_mod
from edgec.errors import EdgecError
from edgec.remote import Session, transport_for
from edgec.util import sha256_file

log = logging.getLogger(__name__)

AGENT_NAME = "edgec-agent.pyz"


@dataclasses.dataclass
class ProfileResult:
    """One artifact measured on one device."""

    build_dir: Path
    device: str
    manifest: dict[str, Any]
    artifact: dict[str, Any]  # the manifest's record of the measured artifact
    report: dict[str, Any]  # the agent's report document
    result_id: int | None  # row in the results store (None with store=False)
    db: Path | None


@dataclasses.dataclass
class Shipment:
    """What goes to the device: files (remote name -> local path), what to run, with which runtime."""

    files: dict[str, Path]
    expected: dict[str, str]
    target: str  # path (relative to the working dir) given to the agent
    runtime: str
    record: dict[str, Any]
    warnings: list[str]


def _record_path(build_dir: Path, record: dict[str, Any]) -> Path:
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
            local = _record_path(build_dir, rec) if rec else build_dir / name
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
    local = _record_path(build_dir, record)
    return Shipment({record["file"]: local}, {record["file"]: record.get("sha256") or sha256_file(local)},
                    record["file"], runtime, record, warnings)


def _agent_args(options: dict[str, Any]) -> list[str]:
    flags = {"runs": "--runs", "min_seconds": "--min-seconds", "warmup": "--warmup", "threads": "--threads",
             "batch": "--batch", "power": "--power", "power_command": "--power-command",
             "power_rail": "--power-rail", "idle_seconds": "--idle-seconds", "seed": "--seed"}
    args: list[str] = []
    for key, flag in flags.items():
        value = options.get(key)
        if value is not None:
            args += [flag, str(value)]
    return args


def parse_report(stdout: str) -> dict[str, Any]:
    """The agent's JSON document from its stdout (native libraries may print lines before it)."""
    text = stdout.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    start = text.find("\n{")
    if text.startswith("{"):
        start = 0
    if start < 0:
        raise EdgecError(f"the agent printed no JSON report; its output ends with: {text[-300:]!r}")
    try:
        return json.loads(text[start:].strip())
    except ValueError as exc:
        raise EdgecError(f"the agent's report is not valid JSON ({exc}); output ends with: {text[-300:]!r}") from exc


def profile(build_dir: str | Path, device: str = "local", *, runtime: str | None = None,
            python: str | None = None, identity: Path | None = None, ssh_options: tuple[str, ...] = (),
            timeout: float = 600, db: str | Path | None = None, store: bool = True,
            **options: Any) -> ProfileResult:
    """Measure a build's artifact on ``device`` with the agent; keep the report in the results store.

    Args:
        build_dir: ``OUT/PROFILE`` written by ``edgec build`` (holds manifest.json).
        device: ``local`` or ``ssh://user@host[:port]``.
        runtime: agent runtime (default: the manifest's runtime).
        python: the device's Python (default: this interpreter for local, ``python3`` over ssh).
        identity, ssh_options: ``ssh -i`` key and ``-o`` options.
        timeout: seconds for each step on the device.
        db: results database (default: :func:`edgec.results.default_path`).
        store: record the result.
        **options: agent bench options: runs, min_seconds, warmup, threads, batch, power,
            power_command, power_rail, idle_seconds, seed.

    Raises:
        EdgecError: no build there, unreachable device, absent runtime, or an invalid report.
    """
    from edgec.agent import bundle
    from edgec.agent.schema import SchemaError, check

    build_dir = Path(build_dir)
    manifest, ship = open_build(build_dir, runtime, options)
    transport = transport_for(device, python=python, identity=identity, ssh_options=ssh_options)
    with tempfile.TemporaryDirectory(prefix="edgec-profile-") as tmp:
        agent = Path(bundle.build(str(Path(tmp) / AGENT_NAME)))
        files = {AGENT_NAME: agent, **ship.files}
        expected = {AGENT_NAME: sha256_file(agent), **ship.expected}
        with Session(transport, timeout) as session:
            session.upload(files, expected)
            argv = [transport.python, session.path(AGENT_NAME), "bench", session.path(ship.target), "--json",
                    "--runtime", ship.runtime, *_agent_args(options)]
            if ship.target != "bundle":
                argv += ["--expect-sha256", ship.expected[ship.target]]
            log.info("running the agent on %s: %s", device, " ".join(argv))
            proc = transport.run(argv, timeout)
    if proc.returncode != 0:
        message = [ln[len("Error: "):] for ln in proc.stderr.splitlines() if ln.startswith("Error: ")]
        detail = message[-1] if message else (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise EdgecError(f"the agent on {device} could not measure {ship.record['file']}: {detail}")
    report = parse_report(proc.stdout)
    try:
        check(report)
    except SchemaError as exc:
        raise EdgecError(f"the agent on {device} sent an invalid report: {exc}") from exc
    report["warnings"] = ship.warnings + report["warnings"]
    result_id = db_path = None
    if store:
        from edgec.results import ResultsStore

        results = ResultsStore(db)
        result_id = results.add(manifest, ship.record, build_dir.resolve(), device, report)
        db_path = results.path
    return ProfileResult(build_dir, device, manifest, ship.record, report, result_id, db_path)
