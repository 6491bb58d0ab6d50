"""The host side of the collector API: ``edgec profile --server``, ``edgec devices``,
``edgec jobs`` and ``edgec report --server`` (httpx, bearer token)."""

from __future__ import annotations

import logging
import os
import time
import urllib.parse
from pathlib import Path
from typing import Any

from edgec.agent.vocab import JOB_TERMINAL_STATES
from edgec.errors import EdgecError
from edgec.fleet import API

log = logging.getLogger(__name__)



def check_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash.

    Raises:
        EdgecError: anything else.
    """
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise EdgecError(f"--server '{url}' has an invalid port; expected http://HOST:PORT") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise EdgecError(f"--server '{url}' is not a collector URL; expected http://HOST:PORT "
                         "(the URL 'edgec serve' prints)")
    return url.rstrip("/")


def _detail(response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(detail, list):  # pydantic's validation errors
        return "; ".join(f"{'.'.join(str(x) for x in d.get('loc', []))}: {d.get('msg')}" for d in detail[:5])
    return str(detail)


class Client:
    """An authenticated session with one collector.

    Args:
        url: the collector's base URL.
        token: its bearer token.
        cafile: CA certificate to verify an https:// collector against (default ``$EDGEC_CAFILE``).
        timeout: seconds for one request (long polls add their wait).
    """

    def __init__(self, url: str, token: str, timeout: float = 30.0, cafile: str | Path | None = None):
        import httpx

        from edgec.version import __version__

        self.url = check_url(url)
        self.timeout = timeout
        verify: Any = True
        cafile = cafile or os.environ.get("EDGEC_CAFILE")  # edgec profile and edgec report read it there
        if cafile:
            import ssl

            try:
                verify = ssl.create_default_context(cafile=str(cafile))
            except (OSError, ssl.SSLError) as exc:
                raise EdgecError(f"--cafile '{cafile}' cannot be used: {getattr(exc, 'strerror', None) or exc}; "
                                 "expected a PEM CA certificate") from exc
        self._http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=10.0), verify=verify,
                                  headers={"Authorization": f"Bearer {token}", "User-Agent": f"edgec/{__version__}"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201), timeout: float | None = None,
                **kwargs: Any):
        """One request; a refusal or an unreachable server becomes an :class:`EdgecError`."""
        import httpx

        try:
            response = self._http.request(method, API + path, timeout=timeout or httpx.USE_CLIENT_DEFAULT, **kwargs)
        except httpx.ConnectError as exc:
            raise EdgecError(f"cannot reach the collector at {self.url} ({exc}); is 'edgec serve' running there? "
                             "check --server") from exc
        except httpx.TimeoutException as exc:
            raise EdgecError(f"the collector at {self.url} did not answer {method} {path} in time ({exc})") from exc
        except httpx.HTTPError as exc:
            raise EdgecError(f"{method} {self.url}{API}{path} failed: {exc}") from exc
        if response.status_code == 401:
            raise EdgecError(f"the collector at {self.url} refused the token (401); use the token 'edgec serve' "
                             "printed on its first start: EDGEC_TOKEN=... or --token-file FILE")
        if response.status_code not in ok:
            raise EdgecError(f"the collector refused {method} {path}: {response.status_code} {_detail(response)}")
        return response

    # ------------------------------------------------------------------ calls

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/health").json()

    def has_blob(self, sha256: str) -> bool:
        return self.request("HEAD", f"/blobs/{sha256}", ok=(200, 404)).status_code == 200

    def upload(self, path: Path, sha256: str) -> bool:
        """Upload a file unless the collector has it; True when it was sent."""
        if self.has_blob(sha256):
            return False
        size = Path(path).stat().st_size
        with open(path, "rb") as fh:
            self.request("PUT", f"/blobs/{sha256}", content=fh, timeout=max(self.timeout, 60.0),
                         headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        return True

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/jobs", json=body).json()

    def job(self, job_id: int, wait: float = 0) -> dict[str, Any]:
        return self.request("GET", f"/jobs/{job_id}", params={"wait": wait}, timeout=self.timeout + wait).json()

    def wait_job(self, job_id: int, timeout: float) -> dict[str, Any]:
        """The job once it is done, failed or cancelled.

        Raises:
            EdgecError: still not finished after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            doc = self.job(job_id, wait=max(0.0, min(30.0, remaining)))
            if doc["state"] in JOB_TERMINAL_STATES:
                return doc
            if time.monotonic() >= deadline:
                where = f"leased to {doc['leased_to']}" if doc["state"] == "leased" else "queued"
                raise EdgecError(f"job {job_id} did not finish within {timeout:g} s (it is {where}, attempt "
                                 f"{doc['attempts']} of {doc['max_attempts']}); it goes on: follow it with "
                                 f"'edgec jobs {job_id} --server {self.url}'")

    def jobs(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        return self.request("GET", "/jobs", params=params).json()["jobs"]

    def cancel(self, job_id: int) -> dict[str, Any]:
        return self.request("POST", f"/jobs/{job_id}/cancel").json()

    def devices(self) -> list[dict[str, Any]]:
        return self.request("GET", "/devices").json()["devices"]

    def enroll(self, device: str, expires_s: float) -> dict[str, Any]:
        return self.request("POST", f"/devices/{device}/enroll", json={"expires_s": expires_s}).json()

    def revoke(self, device: str) -> dict[str, Any]:
        return self.request("POST", f"/devices/{device}/revoke").json()

    def result(self, result_id: int) -> dict[str, Any]:
        return self.request("GET", f"/results/{result_id}").json()

    def report_rows(self, device: str | None = None, model: str | None = None,
                    every_run: bool = False) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"every_run": every_run}
        if device:
            params["device"] = device
        if model:
            params["model"] = model
        return self.request("GET", "/report", params=params, timeout=max(self.timeout, 120.0)).json()["rows"]


def submit(client: Client, build_dir: str | Path, *, profile: str | None = None, device: str | None = None,
           labels: dict[str, str] | None = None, runtime: str | None = None, max_attempts: int = 3,
           lease_seconds: float | None = None, timeout: float = 600, **options: Any) -> dict[str, Any]:
    """Upload a build's files and queue a job measuring its artifact.

    Args:
        client: the collector.
        build_dir: ``OUT/PROFILE`` written by ``edgec build``.
        profile: any device of this profile may run it (default: the build's profile).
        device: only this registered device may run it.
        labels: the device must carry every one of these labels.
        runtime: agent runtime (default: the build's).
        max_attempts: leases before the job fails.
        lease_seconds: the job's lease (default: the collector's).
        timeout: seconds the agent allows the measurement.
        **options: bench options (runs, min_seconds, warmup, threads, batch, power, power_rail,
            idle_seconds, seed).

    Returns:
        The queued job (with ``matching_devices``) plus ``manifest``, ``record`` and ``build_dir``.

    Raises:
        EdgecError: no build there, a file changed since the build, or the collector refused.
    """
    from edgec import manifest as manifest_mod
    from edgec.shipment import open_build

    build_dir = Path(build_dir)
    manifest, ship = open_build(build_dir, runtime, options)
    if not device and not profile:
        profile = (manifest.get("profile") or {}).get("id")
        if not profile:
            raise EdgecError(f"{build_dir / manifest_mod.FILENAME} names no device profile; pass --target PROFILE "
                             "or --device ID")
    for name, local in ship.files.items():
        sent = client.upload(local, ship.expected[name])
        log.info("%s %s (%s)", "uploaded" if sent else "already on the collector:", name, ship.expected[name][:12])
    body = {
        "files": ship.expected, "target": ship.target, "runtime": ship.runtime, "artifact": ship.record,
        "manifest": manifest, "build_dir": str(build_dir.resolve()), "profile": None if device else profile,
        "device": device, "labels": labels or {}, "warnings": ship.warnings, "max_attempts": max_attempts,
        "lease_seconds": lease_seconds, "timeout_s": timeout,
        "options": {k: v for k, v in options.items() if v is not None},
    }
    job = client.create_job(body)
    return {**job, "manifest": manifest, "record": ship.record, "build_dir": build_dir}
