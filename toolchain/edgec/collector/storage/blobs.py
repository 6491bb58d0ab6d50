"""Uploaded files: the files themselves by sha256 in a directory, and their rows in the record."""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

from edgec.collector.storage.store import private

SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Blobs:
    """Uploaded files by sha256 under ``root/ab/abcdef...``; a client's file name is never a path.
    Files are 0600 and directories 0700: only the collector's user reads them."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        if not SHA256.match(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def clean(self) -> int:
        """Remove the partial uploads a killed server left behind (at start, none is in progress)."""
        removed = 0
        for part in (self.root / "tmp").glob("*.part"):
            part.unlink(missing_ok=True)
            removed += 1
        return removed

    def prepare(self) -> None:
        """Create the directory (0700) and restrict an existing one.

        Raises:
            OSError: it cannot be created.
        """
        (self.root / "tmp").mkdir(parents=True, exist_ok=True, mode=0o700)
        private(self.root, 0o700)
        private(self.root / "tmp", 0o700)

    def open_temp(self) -> tuple[Path, int]:
        """A new temporary upload file (0600): its path and an open descriptor.

        Raises:
            OSError: the directory cannot be written.
        """
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = tmp / f"{uuid.uuid4().hex}.part"
        return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def commit(self, temp: Path, sha256: str) -> Path:
        """Move a complete, synced upload into place (atomically) and sync its directory."""
        final = self.path(sha256)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.replace(temp, final)
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return final


def add_blob(conn, sha256: str, size: int) -> bool:
    """Record an uploaded file; False when it was already there."""
    cur = conn.execute("INSERT INTO blobs (sha256, bytes, added) VALUES (?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                       (sha256, size, time.time()))
    return cur.rowcount == 1


def blob_size(conn, sha256: str) -> int | None:
    row = conn.execute("SELECT bytes FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
    return None if row is None else int(row[0])
