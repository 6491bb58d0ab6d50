"""Helpers of the dashboard tests: the sign-in link `edgec serve` printed, page screenshots."""

from __future__ import annotations

import os
from pathlib import Path


def sign_in_link(server) -> str:
    """The link `edgec serve` printed at start."""
    for line in server.first_output.splitlines():
        if line.startswith("dashboard: "):
            return line.split()[1]
    raise AssertionError(f"no dashboard line in: {server.first_output!r}")


def screenshot(page, name: str, tmp_path: Path) -> Path:
    """A screenshot of the page, into $EDGEC_SCREENSHOTS (docs/screenshots when refreshed) or tmp."""
    folder = Path(os.environ.get("EDGEC_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("EDGEC_SCREENSHOTS"):  # for the docs: 64 colours keep them small
        from PIL import Image

        with Image.open(path) as shot:
            small = shot.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
        small.save(path, optimize=True)
    return path
