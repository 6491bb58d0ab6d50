"""The host collector of a device fleet: ``edgec serve`` and its clients.

Agents (``edgec-agent.pyz run``) register with what they detected, long-poll for jobs they can
run, download artifacts by sha256 and post their reports; ``edgec profile --server`` uploads
artifacts and queues jobs; ``edgec devices``, ``edgec jobs`` and ``edgec report --server`` read
the record. The server keeps everything in one SQLite file (WAL), or in a PostgreSQL database
that several servers share, plus a content-addressed directory of uploaded files:

- :mod:`edgec.collector.storage`: the record, committed (and synced) before any request is
  answered; device credentials by the sha256 of their secret (one module per role: the store,
  connections, schema, blobs, jobs, results, credentials, reads);
- :mod:`edgec.collector.messages`: the request bodies, validated with pydantic;
- :mod:`edgec.collector.http`: the connections' header cap, read timeouts and connection limit;
- :mod:`edgec.collector.server`: the server's settings, its socket, TLS and uvicorn;
- :mod:`edgec.collector.routes`: the FastAPI application (its routes, the lease reaper);
- :mod:`edgec.collector.guard`: the token and body-size guard (admin token, device credentials,
  enrollment tokens);
- :mod:`edgec.collector.bodies`: strict JSON bodies;
- :mod:`edgec.collector.loop`: long polls woken when jobs change, SQLite writes batched per loop turn;
- :mod:`edgec.collector.client`: the host side's HTTP client;
- :mod:`edgec.collector.tokens`: the admin token file (created once, mode 0600).
"""

from __future__ import annotations

import os
from pathlib import Path

API = "/v1"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8750
DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
TOKEN_ENV = "EDGEC_TOKEN"


def default_dir() -> Path:
    """``$XDG_DATA_HOME/edgec/collector`` (else ``~/.local/share/edgec/collector``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "edgec" / "collector"


def default_db() -> Path:
    return default_dir() / "collector.db"
