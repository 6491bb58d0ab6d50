"""manifest.json: what was built, from what, how, with which libraries, and how well it verified."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError
from edgec.version import __version__

SCHEMA_VERSION = 1
FILENAME = "manifest.json"


def new(**fields: Any) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "edgec_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **fields,
    }


def write(directory: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` as strict JSON: a NaN or Infinity is written as null, and the
    manifest's ``warnings`` say where (in the dict too, so --json prints the same)."""
    from edgec.util import finite_json

    path = Path(directory) / FILENAME
    _, replaced = finite_json(manifest)
    if replaced:
        manifest.setdefault("warnings", []).append(
            f"{len(replaced)} non-finite number{'s' if len(replaced) != 1 else ''} recorded as null: "
            + ", ".join(r.lstrip(".") for r in replaced[:8]) + (", ..." if len(replaced) > 8 else ""))
    clean, _ = finite_json(manifest)
    path.write_text(json.dumps(clean, indent=2, sort_keys=False, allow_nan=False, default=_json_default) + "\n")
    return path


def read(directory_or_file: Path) -> dict[str, Any]:
    """Read a manifest from a build directory or the file itself.

    Raises:
        EdgecError: missing or unreadable manifest.
    """
    path = Path(directory_or_file)
    if path.is_dir():
        path = path / FILENAME
    try:
        return json.loads(path.read_text(), parse_constant=_refuse_constant)
    except FileNotFoundError as exc:
        raise EdgecError(f"no {FILENAME} in '{path.parent}'; is it an edgec build directory?") from exc
    except (OSError, ValueError) as exc:
        raise EdgecError(f"cannot read '{path}': {exc}") from exc


def _refuse_constant(name: str):
    raise ValueError(f"'{name}' is not JSON")


def _json_default(value: Any):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
