"""The host side of a device fleet's collector (``edgec serve``): its HTTP client
(:mod:`edgec.fleet.client`), the admin token file (:mod:`edgec.fleet.tokens`) and the address,
paths and names that the collector and its clients agree on. ``edgec profile --server``,
``edgec devices``, ``edgec jobs``, ``edgec report --server``, ``edgec ci`` and ``edgec search``
use it; the server (:mod:`edgec.collector`) reads the same settings from here."""

from __future__ import annotations

import os
from pathlib import Path

from edgec.agent.vocab import API  # noqa: F401  (the API's path prefix, shared with the agent)

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
