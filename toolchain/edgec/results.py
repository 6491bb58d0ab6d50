"""The host's results store: one SQLite file of artifacts (by sha256, with their manifest) and
the agent reports measured on devices.

Default location ``~/.local/share/edgec/results.db`` (``$XDG_DATA_HOME/edgec/results.db`` when
set); ``EDGEC_RESULTS_DB`` or ``--db`` override it. The schema version is SQLite's
``user_version``; a file written by a newer edgec is refused rather than misread.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError

ENV_VAR = "EDGEC_RESULTS_DB"
STORE_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS artifacts (
    sha256          TEXT PRIMARY KEY,
    file            TEXT NOT NULL,
    format          TEXT,
    precision       TEXT,
    bytes           INTEGER,
    target          TEXT,
    profile         TEXT,
    runtime         TEXT,
    source_sha256   TEXT,
    source_name     TEXT,
    accuracy        REAL,
    float_accuracy  REAL,
    accuracy_drop   REAL,
    build_dir       TEXT,
    manifest        TEXT NOT NULL,
    added           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_source ON artifacts (source_sha256, precision);
CREATE TABLE IF NOT EXISTS results (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    created             TEXT NOT NULL,
    artifact_sha256     TEXT NOT NULL REFERENCES artifacts (sha256),
    device              TEXT NOT NULL,
    device_kind         TEXT,
    device_model        TEXT,
    runtime             TEXT,
    runtime_version     TEXT,
    threads             INTEGER,
    batch               INTEGER,
    runs                INTEGER,
    latency_min_ms      REAL,
    latency_median_ms   REAL,
    latency_mean_ms     REAL,
    latency_p90_ms      REAL,
    latency_p99_ms      REAL,
    latency_std_ms      REAL,
    throughput_ips      REAL,
    power_available     INTEGER NOT NULL,
    power_active_w      REAL,
    power_idle_w        REAL,
    energy_mj           REAL,
    energy_above_idle_mj REAL,
    schema_version      INTEGER NOT NULL,
    report              TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_artifact ON results (artifact_sha256, device);
"""


def default_path() -> Path:
    """``$EDGEC_RESULTS_DB``, else ``$XDG_DATA_HOME/edgec/results.db``, else ~/.local/share/edgec/."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "edgec" / "results.db"


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def artifact_accuracy(manifest: dict[str, Any], record: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    """(artifact accuracy, float accuracy, drop in points) from the artifact's verification."""
    primary = (manifest.get("artifacts") or [{}])[0]
    v = record.get("verification") or (manifest.get("verification") if record.get("sha256") == primary.get("sha256") else None)
    if not v or "artifact_accuracy" not in v:
        return None, None, None
    return v.get("artifact_accuracy"), v.get("float_accuracy"), v.get("accuracy_drop_points")


class ResultsStore:
    """Artifacts and measurements in one SQLite file."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path).expanduser() if path else default_path()

    @contextlib.contextmanager
    def connect(self, create: bool = True) -> Iterator[sqlite3.Connection]:
        """An open connection with the schema in place; commits on success.

        Raises:
            EdgecError: the file cannot be created or opened, or was written by a newer edgec.
        """
        if not create and not self.path.exists():
            raise EdgecError(f"no results database at '{self.path}'; run 'edgec profile' first or pass --db")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise EdgecError(f"cannot open results database '{self.path}': {exc}") from exc
        conn.row_factory = sqlite3.Row
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > STORE_VERSION:
                raise EdgecError(f"results database '{self.path}' has version {version}, newer than this edgec "
                                 f"understands ({STORE_VERSION}); update edgec or use another --db")
            if version < STORE_VERSION:
                conn.executescript(SCHEMA)
                conn.execute(f"PRAGMA user_version = {STORE_VERSION}")
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn
            conn.commit()
        except sqlite3.DatabaseError as exc:
            raise EdgecError(f"results database '{self.path}' is unusable: {exc}") from exc
        finally:
            conn.close()

    def add(self, manifest: dict[str, Any], record: dict[str, Any], build_dir: Path | str | None,
            device: str, report: dict[str, Any]) -> int:
        """Record ``report`` (an agent report) for the artifact ``record`` of ``manifest``.

        Returns:
            The result's id.
        """
        with self.connect() as conn:
            insert_artifact(conn, manifest, record, build_dir)
            return insert_result(conn, record["sha256"], device, report)

    def rows(self, *, device: str | None = None, latest: bool = True) -> list[dict[str, Any]]:
        """Results joined with their artifact; with ``latest``, one per (artifact, device)."""
        with self.connect(create=False) as conn:
            return query_rows(conn, device=device, latest=latest)

    def artifacts(self) -> list[dict[str, Any]]:
        with self.connect(create=False) as conn:
            return query_artifacts(conn)


def query_rows(conn, *, device: str | None = None, latest: bool = True) -> list[dict[str, Any]]:
    """The rows of :meth:`ResultsStore.rows` from an open connection (SQLite, or the collector's
    PostgreSQL connection, which takes the same SQL)."""
    query = ("SELECT r.*, a.file, a.format, a.precision, a.bytes, a.target, a.profile, a.source_sha256, "
             "a.source_name, a.accuracy, a.float_accuracy, a.accuracy_drop, a.build_dir "
             "FROM results r JOIN artifacts a ON a.sha256 = r.artifact_sha256")
    params: list[Any] = []
    where = []
    if device:
        where.append("r.device = ?")
        params.append(device)
    if latest:
        where.append("r.id = (SELECT MAX(id) FROM results r2 WHERE r2.artifact_sha256 = r.artifact_sha256 "
                     "AND r2.device = r.device)")
    if where:
        query += " WHERE " + " AND ".join(where)
    query += " ORDER BY a.source_name, r.device, r.latency_median_ms"
    return [dict(row) for row in conn.execute(query, params)]


def query_artifacts(conn) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(
        "SELECT sha256, file, format, precision, bytes, source_sha256, source_name, profile FROM artifacts")]

def insert_artifact(conn: sqlite3.Connection, manifest: dict[str, Any], record: dict[str, Any],
                    build_dir: Path | str | None) -> None:
    """Insert (or refresh) the artifact ``record`` of ``manifest`` in an open transaction."""
    acc, float_acc, drop = artifact_accuracy(manifest, record)
    source = manifest.get("source") or {}
    conn.execute(
        "INSERT INTO artifacts (sha256, file, format, precision, bytes, target, profile, runtime, "
        "source_sha256, source_name, accuracy, float_accuracy, accuracy_drop, build_dir, manifest, added) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (sha256) DO UPDATE SET build_dir = excluded.build_dir, manifest = excluded.manifest, "
        "accuracy = excluded.accuracy, float_accuracy = excluded.float_accuracy, "
        "accuracy_drop = excluded.accuracy_drop",
        (record["sha256"], record["file"], record.get("format"), record.get("precision") or manifest.get("precision"),
         record.get("bytes"), manifest.get("target"), (manifest.get("profile") or {}).get("id"),
         manifest.get("runtime"), source.get("sha256"), source.get("name"), acc, float_acc, drop,
         str(build_dir) if build_dir else None, json.dumps(manifest), _now()),
    )


INSERT_RESULT = (
    "INSERT INTO results (created, artifact_sha256, device, device_kind, device_model, runtime, "
    "runtime_version, threads, batch, runs, latency_min_ms, latency_median_ms, latency_mean_ms, "
    "latency_p90_ms, latency_p99_ms, latency_std_ms, throughput_ips, power_available, power_active_w, "
    "power_idle_w, energy_mj, energy_above_idle_mj, schema_version, report) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id")


def result_values(artifact_sha256: str, device: str, report: dict[str, Any], report_text: str | None = None) -> tuple:
    """The values of :data:`INSERT_RESULT` for one agent report measured on ``device``.
    ``report_text``: the report already serialized as JSON (else it is serialized here)."""
    lat, power, rt = report["latency_ms"], report["power"], report["runtime"]
    energy = power.get("energy_mj_per_inference") or {}
    return (_now(), artifact_sha256, device, report["device"].get("kind"), report["device"].get("model"),
            rt.get("name"), rt.get("version"), rt.get("threads"), report["throughput"]["batch"],
            report["throughput"]["runs"], lat["min"], lat["median"], lat["mean"], lat["p90"], lat["p99"],
            lat["std"], report["throughput"]["inferences_per_s"], int(bool(power.get("available"))),
            power.get("active_w"), power.get("idle_w"), energy.get("total"), energy.get("above_idle"),
            report["schema_version"], report_text if report_text is not None else json.dumps(report))


def insert_result(conn: sqlite3.Connection, artifact_sha256: str, device: str, report: dict[str, Any],
                  report_text: str | None = None) -> int:
    """Insert one agent report measured on ``device`` in an open transaction; the new result's id."""
    cur = conn.execute(INSERT_RESULT, result_values(artifact_sha256, device, report, report_text))
    return int(cur.fetchone()[0])
