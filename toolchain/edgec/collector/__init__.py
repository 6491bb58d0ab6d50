"""The host collector of a device fleet: ``edgec serve`` and its clients.

Agents (``edgec-agent.pyz run``) register with what they detected, long-poll for jobs they can
run, download artifacts by sha256 and post their reports; ``edgec profile --server`` uploads
artifacts and queues jobs; ``edgec devices``, ``edgec jobs`` and ``edgec report --server`` read
the record. The server keeps everything in one SQLite file (WAL), or in a PostgreSQL database
that several servers share, plus a content-addressed directory of uploaded files:

- :mod:`edgec.collector.storage`: the record, committed (and synced) before any request is
  answered; device credentials by the sha256 of their secret (one module per role: the store,
  SQLite and PostgreSQL implementations, writers, connections, schema, blobs, jobs, results,
  credentials, reads);
- :mod:`edgec.collector.messages`: the request bodies, validated with pydantic;
- :mod:`edgec.collector.http`: the connections' header cap, read timeouts and connection limit;
- :mod:`edgec.collector.server`: the server's settings, its socket, TLS and uvicorn;
- :mod:`edgec.collector.routes`: the FastAPI application (one router per resource, the lease
  reaper);
- :mod:`edgec.collector.guard`: the token and body-size guard (admin token, device credentials,
  enrollment tokens);
- :mod:`edgec.collector.bodies`: strict JSON bodies;
- :mod:`edgec.collector.loop`: long polls woken when jobs change, SQLite writes batched per loop turn;
- the host side's HTTP client and the admin token file are :mod:`edgec.fleet`'s, which
  ``edgec profile --server``, ``edgec ci`` and ``edgec search`` use without the server.
"""

from __future__ import annotations

# what the server and its clients agree on, defined with the clients (the lower layer)
from edgec.fleet import (  # noqa: F401
    API,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_URL,
    TOKEN_ENV,
    default_db,
    default_dir,
)
