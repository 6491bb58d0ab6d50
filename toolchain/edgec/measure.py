"""Measuring a build's artifact on a device (the ``edgec profile`` command): run the device agent,
here, over ssh or through a fleet collector, keep its report, and compare with the fp32 artifact.

The artifact comes from ``OUT/PROFILE/manifest.json`` (``artifacts[0]`` is the primary one); what
ships with it and which runtime runs it is what the target kind recorded there
(:mod:`edgec.shipment`): a TensorRT build ships its bundle, an Edge TPU build its compiled model or,
when it was not compiled, its int8 model for the device's CPU (said in the report's warnings).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError
from edgec.remote import Session, transport_for
from edgec.shipment import open_build
from edgec.util import sha256_file

log = logging.getLogger(__name__)

AGENT_NAME = "edgec-agent.pyz"


@dataclasses.dataclass
class Measurement:
    """One artifact measured on one device."""

    build_dir: Path
    device: str
    manifest: dict[str, Any]
    artifact: dict[str, Any]  # the manifest's record of the measured artifact
    report: dict[str, Any]  # the agent's report document
    result_id: int | None  # row in the results store (None with store=False)
    db: Path | None
    job_id: int | None = None  # the collector's job, when measured by a fleet

    @property
    def precision(self) -> str | None:
        return self.artifact.get("precision") or self.manifest.get("precision")

    def row(self) -> dict[str, Any]:
        """The fields :func:`edgec.report.fp32_baseline` compares, as a results-store row has them."""
        return {"id": None, "source_sha256": (self.manifest.get("source") or {}).get("sha256"),
                "precision": self.precision, "device": self.device, "format": self.artifact.get("format"),
                "runtime": self.report["runtime"]["name"], "threads": self.report["runtime"]["threads"],
                "latency_median_ms": self.report["latency_ms"]["median"], "bytes": self.artifact.get("bytes")}


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


def measure(build_dir: str | Path, device: str = "local", *, runtime: str | None = None,
            python: str | None = None, identity: Path | None = None, ssh_options: tuple[str, ...] = (),
            timeout: float = 600, db: str | Path | None = None, store: bool = True,
            **options: Any) -> Measurement:
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
            if ship.target in ship.expected:  # one file (a bundle folder is checked file by file on upload)
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
    return Measurement(build_dir, device, manifest, ship.record, report, result_id, db_path)


@dataclasses.dataclass(frozen=True)
class FleetRequest:
    """What ``edgec profile --server`` asks of a fleet collector.

    Attributes:
        server: the collector's URL.
        token_file: the collector's token file (default: ``$EDGEC_TOKEN``, else a local collector's).
        profile: any device of this profile may run the jobs (default: each build's profile).
        device: only this registered device may run them.
        labels: the device must carry every one of these labels.
        runtime: agent runtime (default: each build's).
        attempts: leases before a job is failed.
        lease_seconds: a job's lease without a heartbeat (default: the collector's).
        timeout: seconds the agent allows a measurement.
        bench: agent bench options (runs, min_seconds, warmup, threads, batch, power, power_rail,
            idle_seconds).
    """

    server: str
    token_file: Path | None = None
    profile: str | None = None
    device: str | None = None
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    runtime: str | None = None
    attempts: int = 3
    lease_seconds: float | None = None
    timeout: float = 600
    bench: dict[str, Any] = dataclasses.field(default_factory=dict)


def queue_on_fleet(client, build_dirs, request: FleetRequest) -> list[dict[str, Any]]:
    """Upload each build and queue a job measuring its artifact; returns the queued jobs."""
    from edgec.fleet.client import submit

    return [submit(client, build_dir, profile=request.profile, device=request.device, labels=request.labels,
                   runtime=request.runtime, max_attempts=request.attempts, lease_seconds=request.lease_seconds,
                   timeout=request.timeout, **request.bench) for build_dir in build_dirs]


def collect_from_fleet(client, jobs: list[dict[str, Any]], wait_timeout: float) -> tuple[list[Measurement], list[str]]:
    """Wait for each job; the measurements of the finished ones and a line for each that is not."""
    results, failures = [], []
    for job in jobs:
        doc = client.wait_job(job["id"], wait_timeout)
        if doc["state"] != "done":
            failures.append(f"job {doc['id']} ({job['build_dir']}) {doc['state']}: {doc['error'] or 'cancelled'}")
            continue
        stored = client.result(doc["result_id"])
        report = stored["report"]
        report["warnings"] = list(doc.get("warnings") or []) + report["warnings"]
        results.append(Measurement(job["build_dir"], stored["device"], job["manifest"], job["record"], report,
                                   doc["result_id"], None, job_id=doc["id"]))
    return results, failures


def baselines(measurements: list[Measurement], db: str | Path | None) -> dict[int, dict[str, Any]]:
    """Speed-up and compression of each measurement against its fp32 baseline, by ``id()``.

    The baseline is chosen by :func:`edgec.report.fp32_baseline` (the rule ``edgec report`` uses)
    among the measurements just taken, then the results database's latest rows. ``threads`` says
    when the baseline ran with another thread count, which makes the speed-up no like-for-like.
    """
    from edgec.report import fp32_baseline

    stored: list[dict[str, Any]] = []
    path = db or next((m.db for m in measurements if m.db), None)
    if path is not None:
        from edgec.results import ResultsStore

        stored = ResultsStore(path).rows(latest=True)
    taken = [m.row() for m in measurements]
    # the measurements of this run rank above every stored row
    newest = max((r["id"] for r in stored), default=0)
    for i, row in enumerate(taken):
        row["id"] = newest + 1 + i
    out: dict[int, dict[str, Any]] = {}
    for m, row in zip(measurements, taken, strict=True):
        base = fp32_baseline(row, taken + stored)
        where = None
        if base is not None:
            where = "itself" if base is row else ("this run" if any(base is t for t in taken) else f"result {base['id']}")
        out[id(m)] = {
            "speedup_vs_fp32": (base["latency_median_ms"] / row["latency_median_ms"]
                                if base and row["latency_median_ms"] else None),
            "compression_vs_fp32": (base["bytes"] / row["bytes"] if base and base["bytes"] and row["bytes"] else None),
            "baseline": where,
            "baseline_threads": base["threads"] if base else None,
            "threads_differ": bool(base) and base["threads"] != row["threads"],
        }
    return out
