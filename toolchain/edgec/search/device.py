"""Measuring a trial's artifact on the device: latency repeated until its confidence interval is
tight enough to rank the trial against the front, energy where the device has a sensor.

Each repetition is one run of the edgec agent (:func:`edgec.measure.measure` here or over ssh,
or one fleet job through :func:`edgec.measure.queue_on_fleet`), so the interval covers what
changes between runs on a device (load, clocks, placement), not only the spread of the timed
inferences inside one run. The point estimate is the mean of the runs' medians, with a Student
t interval (95 %) around it; p90 is the mean of the runs' p90s.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError

log = logging.getLogger(__name__)

# two-sided 95 % Student t quantiles by degrees of freedom (1..30); the normal quantile beyond
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]


def t95(df: int) -> float:
    return _T95[df - 1] if 1 <= df <= len(_T95) else 1.96


def interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t interval of ``values`` (``(mean, lo, hi)``; a point for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = t95(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def settled(values: list[float], against: list[float], limit: float | None, *, min_runs: int, max_runs: int,
            rtol: float) -> str | None:
    """Why the repetitions can stop, or ``None`` to measure again.

    They stop once there are ``min_runs`` and the interval is within ``rtol`` of the mean, or no
    latency of the front (``against``) and not the limit lie inside it (the trial ranks the same
    against each of them whatever the next runs give), or at ``max_runs``. With no front and no
    limit (the first trial, a baseline) only ``rtol`` and ``max_runs`` end them.
    """
    if len(values) < min_runs:
        return None
    mean, lo, hi = interval(values)
    if hi - lo <= 2 * rtol * mean:
        return f"interval within {rtol * 100:g} % of the mean"
    inside = [v for v in against if lo <= v <= hi]
    if limit is not None and lo <= limit <= hi:
        inside.append(limit)
    if not inside and (against or limit is not None):
        return "interval clear of the front's latencies" + (" and the limit" if limit is not None else "")
    if len(values) >= max_runs:
        return (f"{max_runs} runs (the interval still holds {len(inside)} latencies of the front or the limit)"
                if inside else f"{max_runs} runs")
    return None


@dataclasses.dataclass(frozen=True)
class Device:
    """Where trials are measured and how.

    Attributes:
        device: ``local`` or ``ssh://user@host[:port]``; with ``server``, a registered device id
            (else any device of the build's profile with ``labels``).
        server: a fleet collector's URL: each repetition is a job there.
        labels: with ``server``: the device must carry these labels.
        token_file, cafile: with ``server``: the collector's admin token and CA.
        runs, min_seconds, warmup, threads: the agent's bench options per repetition.
        min_runs, max_runs, rtol: repetitions (see :func:`settled`).
        python, identity, ssh_options: for ``ssh://`` devices.
        timeout: seconds allowed for one repetition (and for a fleet job to finish).
    """

    device: str | None = "local"
    server: str | None = None
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    token_file: Path | None = None
    cafile: Path | None = None
    runs: int | None = None
    min_seconds: float | None = None
    warmup: int | None = None
    threads: int | None = None
    min_runs: int = 3
    max_runs: int = 8
    rtol: float = 0.02
    python: str | None = None
    identity: Path | None = None
    ssh_options: tuple[str, ...] = ()
    timeout: float = 600

    def where(self) -> str:
        if self.server:
            who = f"device {self.device}" if self.device else "any device of the profile"
            labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
            return f"fleet {self.server} ({who}{', labels ' + labels if labels else ''})"
        return self.device or "local"

    def key(self) -> dict[str, Any]:
        """What a measurement depends on (part of a trial's key)."""
        return {"where": self.where(), "runs": self.runs, "min_seconds": self.min_seconds, "warmup": self.warmup,
                "threads": self.threads}

    def bench(self) -> dict[str, Any]:
        return {k: v for k, v in (("runs", self.runs), ("min_seconds", self.min_seconds), ("warmup", self.warmup),
                                  ("threads", self.threads)) if v is not None}

    def client(self):
        from edgec.fleet.client import Client
        from edgec.fleet.tokens import client_token

        return Client(self.server, client_token(self.token_file), cafile=self.cafile)

    def power(self, profile: str) -> tuple[bool, str | None]:
        """Whether the device reads power (energy can be an objective), and why not.

        Local and ssh devices are asked with the agent's ``detect``; on a fleet, every registered
        device that could take the jobs must have a sensor.
        """
        if self.server:
            with self.client() as client:
                devices = client.devices()
            matching = [d for d in devices if (d["id"] == self.device if self.device else d.get("profile") == profile)
                        and all((d.get("labels") or {}).get(k) == v for k, v in self.labels.items())]
            if not matching:
                return False, f"no device registered on {self.server} can take the jobs yet ({self.where()})"
            without = [d["id"] for d in matching if not (d.get("power") or {}).get("available")]
            if without:
                return False, f"device(s) {', '.join(without)} have no power sensor"
            return True, None
        return _detect_power(self)

    def measure(self, build_dir: Path, against: list[float], limit: float | None = None) -> dict[str, Any]:
        """Latency (and energy) of the artifact in ``build_dir``, repeated as :func:`settled` says.

        Returns:
            ``{"p50_ms", "p90_ms", "ci_ms": [lo, hi], "runs": [...], "stopped": why, "devices",
            "energy_mj", "power": {"available", "reason"}, "seconds"}``.

        Raises:
            EdgecError: the agent or the fleet could not measure it.
        """
        from edgec.search.interrupts import checkpoint

        t0 = time.perf_counter()
        reports: list[tuple[str, dict[str, Any]]] = []
        why = None
        if self.server:
            from edgec.measure import FleetRequest, collect_from_fleet, queue_on_fleet

            request = FleetRequest(server=self.server, token_file=self.token_file, device=self.device,
                                   labels=dict(self.labels), timeout=self.timeout, bench=self.bench())
            with self.client() as client:
                batch = self.min_runs
                while why is None:
                    checkpoint()
                    jobs = queue_on_fleet(client, [build_dir] * batch, request)
                    got, failures = collect_from_fleet(client, jobs, self.timeout)
                    if failures:
                        raise EdgecError(f"the fleet could not measure {build_dir}: {'; '.join(failures)}")
                    reports += [(m.device, m.report) for m in got]
                    why = settled([r["latency_ms"]["median"] for _, r in reports], against, limit,
                                  min_runs=self.min_runs, max_runs=self.max_runs, rtol=self.rtol)
                    batch = 1
        else:
            from edgec.measure import measure

            while why is None:
                checkpoint()
                m = measure(build_dir, self.device or "local", python=self.python, identity=self.identity,
                            ssh_options=self.ssh_options, timeout=self.timeout, store=False, **self.bench())
                reports.append((m.device, m.report))
                why = settled([r["latency_ms"]["median"] for _, r in reports], against, limit,
                              min_runs=self.min_runs, max_runs=self.max_runs, rtol=self.rtol)
        return summarize(reports, why, time.perf_counter() - t0)


def summarize(reports: list[tuple[str, dict[str, Any]]], why: str, seconds: float) -> dict[str, Any]:
    """The measurement record of a trial from the agent reports of its repetitions."""
    medians = [r["latency_ms"]["median"] for _, r in reports]
    p50, lo, hi = interval(medians)
    lo = max(lo, 0.0)  # a latency is positive, whatever a wide interval of a few runs says
    powers = [r["power"] for _, r in reports]
    energy = None
    power: dict[str, Any] = {"available": all(p["available"] for p in powers)}
    if power["available"]:
        energy = statistics.fmean(p["energy_mj_per_inference"]["total"] for p in powers)
        power["sensor"] = powers[0]["sensor"]
    else:
        power["reason"] = next(p.get("reason") or "not every run read power" for p in powers if not p["available"])
    devices = list(dict.fromkeys(d for d, _ in reports))
    return {
        "p50_ms": p50, "p90_ms": statistics.fmean(r["latency_ms"]["p90"] for _, r in reports),
        "ci_ms": [lo, hi], "runs": [{"device": d, "median_ms": r["latency_ms"]["median"], "p90_ms": r["latency_ms"]["p90"],
                                     "count": r["latency_ms"]["count"]} for d, r in reports],
        "stopped": why, "devices": devices, "device_model": reports[0][1]["device"].get("model"),
        "runtime": reports[0][1]["runtime"]["name"], "threads": reports[0][1]["runtime"]["threads"],
        "energy_mj": energy, "power": power, "seconds": round(seconds, 3),
    }


def _detect_power(device: Device) -> tuple[bool, str | None]:
    """The agent's ``detect`` on a local or ssh device: its power sensor, or why there is none."""
    import json
    import tempfile

    from edgec.agent import bundle
    from edgec.remote import Session, transport_for
    from edgec.util import sha256_file

    transport = transport_for(device.device or "local", python=device.python, identity=device.identity,
                              ssh_options=device.ssh_options)
    with tempfile.TemporaryDirectory(prefix="edgec-search-") as tmp:
        agent = Path(bundle.build(str(Path(tmp) / "edgec-agent.pyz")))
        with Session(transport, device.timeout) as session:
            session.upload({agent.name: agent}, {agent.name: sha256_file(agent)})
            proc = transport.run([transport.python, session.path(agent.name), "detect", "--json"], device.timeout)
    if proc.returncode != 0:
        raise EdgecError(f"the agent on {device.where()} could not detect the device: "
                         f"{(proc.stderr.strip().splitlines() or [f'exit code {proc.returncode}'])[-1]}")
    try:
        power = json.loads(proc.stdout)["power"]
    except (ValueError, KeyError) as exc:
        raise EdgecError(f"the agent on {device.where()} answered 'detect' without a power section ({exc})") from None
    return bool(power.get("available")), power.get("reason")
