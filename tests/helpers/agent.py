"""Agent test helpers: the device fixture trees (sysfs-like files) and changing them in place."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "agent" / "fixtures"


def write_in_place(path: Path, text: str) -> None:
    """Change a sysfs-like value the way the kernel does: same file (readers keep their open
    descriptor and re-read it), new contents of the same length in one write."""
    data = text.encode()
    assert len(data) == path.stat().st_size, "keep the length: no truncation while a reader may read"
    with open(path, "r+b", buffering=0) as fh:
        fh.write(data)
