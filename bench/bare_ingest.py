"""The baseline of bench/bench_collector_cost.py: a bare FastAPI endpoint that inserts one row per
post and commits it (SQLite in WAL mode with synchronous=FULL, or PostgreSQL), served by uvicorn
like `edgec serve` (httptools, uvloop, no access log). No token, no validation beyond "a JSON
object", no idempotency: what any service storing a post durably pays at least.

Usage: BARE_DB=PATH|postgresql://... python bench/bare_ingest.py PORT
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from typing import Annotated, Any

import uvicorn
from fastapi import Body, FastAPI

DB = os.environ["BARE_DB"]
app = FastAPI()

if DB.startswith("postgresql://"):
    import psycopg

    conn = psycopg.connect(DB)
    conn.execute("CREATE TABLE IF NOT EXISTS posts (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)")
    conn.commit()

    def insert(text: str) -> int:
        row = conn.execute("INSERT INTO posts (body) VALUES (%s) RETURNING id", (text,)).fetchone()
        conn.commit()
        return row[0]
else:
    conn = sqlite3.connect(DB, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS posts (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")

    def insert(text: str) -> int:
        conn.execute("BEGIN")
        rid = conn.execute("INSERT INTO posts (body) VALUES (?)", (text,)).lastrowid
        conn.execute("COMMIT")
        return rid


@app.post("/v1/results", status_code=201)
async def post(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    return {"result_id": insert(json.dumps(body)), "duplicate": False}


@app.get("/v1/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None, access_log=False,
                server_header=False)
