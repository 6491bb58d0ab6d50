"""Device profiles: one TOML file per device, checked by one schema.

A profile states what a device can do (precisions, runtime, power sensor, memory) and which target
kind builds for it; the kind's own table (GPU arch and TensorRT version, Edge TPU variant...) is
checked by the schema that kind's :class:`~edgec.targets.base.Target` declares
(:attr:`~edgec.targets.base.Target.section`). Adding a device that an existing target serves is one
file in the top-level ``profiles/`` folder. Unknown keys are rejected, naming the file and the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgec import targets
from edgec.agent import vocab
from edgec.errors import EdgecError, choices
from edgec.resources import data_dir
from edgec.targets.schema import Profile, Spec, check_table, list_of, one_of, positive

__all__ = ["PROFILE_DIR", "Profile", "all_profiles", "get", "load_file", "sections", "validate"]

PROFILE_DIR = data_dir("profiles")

PRECISIONS = vocab.PRECISIONS
RUNTIMES = vocab.RUNTIMES
POWER_SENSORS = ("none", *vocab.SENSORS)


def top_level() -> Spec:
    """The keys every profile has; ``target`` is one of the registered kinds."""
    return {
        "id": (str, True, None),
        "device": (str, True, None),
        "target": (str, True, one_of(tuple(targets.REGISTRY))),
        "runtime": (str, True, one_of(RUNTIMES)),
        "precisions": (list, True, list_of(PRECISIONS)),
        "default_precision": (str, True, one_of(PRECISIONS)),
        "arch": (str, False, one_of(("x86_64", "aarch64", "armv7l", "any"))),
        "cpu": (str, False, None),
        "threads": (int, False, positive),
        "memory_mb": (int, False, positive),
        "int8_io": (str, False, one_of(("int8", "uint8"))),
        "python": (str, False, None),
        "notes": (str, False, None),
    }


#: the table every kind's profile may carry
POWER: Spec = {
    "sensor": (str, True, one_of(POWER_SENSORS)),
    "rails": (list, False, None),
    "board_rail": (str, False, None),
    "note": (str, False, None),
}


def sections() -> dict[str, tuple[str, Spec]]:
    """Every kind's own table: table name -> (kind, schema), from the registered targets."""
    out: dict[str, tuple[str, Spec]] = {}
    for kind in targets.REGISTRY:
        cls = targets.target_class(kind)
        if cls.section is not None:
            out[cls.section[0]] = (kind, cls.section[1])
    return out


def validate(data: Mapping[str, Any], path: Path) -> Profile:
    """Check one parsed profile against the schema: the common keys, ``[power]``, and the tables
    of the target kinds (a kind's profile must carry its kind's table).

    Raises:
        EdgecError: naming the file and the offending key.
    """
    where = str(path)
    kinds = sections()
    tables = ("power", *kinds)
    check_table(data, top_level(), where, allowed=tables)
    for name in tables:
        if name in data:
            if not isinstance(data[name], dict):
                raise EdgecError(f"{where}: '{name}' must be a table")
            spec = POWER if name == "power" else kinds[name][1]
            for key in data[name]:
                if key not in spec:
                    raise EdgecError(f"{where}: unknown key '{name}.{key}'; valid keys: {choices(spec)}")
            check_table(data[name], spec, f"{where} [{name}]")
    if data["id"] != path.stem:
        raise EdgecError(f"{where}: id '{data['id']}' must match the file name '{path.stem}'")
    if data["default_precision"] not in data["precisions"]:
        raise EdgecError(
            f"{where}: default_precision '{data['default_precision']}' is not in precisions "
            f"{data['precisions']}"
        )
    own = targets.target_class(data["target"]).section
    if own is not None and own[0] not in data:
        raise EdgecError(f"{where}: target '{data['target']}' needs a [{own[0]}] table")
    fields = {k: v for k, v in data.items() if k in top_level() or k == "power"}
    fields["precisions"] = tuple(fields["precisions"])
    return Profile(**fields, sections={k: data[k] for k in kinds if k in data}, path=path,
                   section_names=frozenset(kinds))


def load_file(path: Path) -> Profile:
    """Read and validate one profile file."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise EdgecError(f"cannot read profile '{path}': {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise EdgecError(f"{path}: not valid TOML: {exc}") from exc
    return validate(data, path)


@lru_cache(maxsize=4)
def _all(directory: Path = PROFILE_DIR) -> dict[str, Profile]:
    return {p.stem: load_file(p) for p in sorted(directory.glob("*.toml"))}


def all_profiles(directory: Path | None = None) -> list[Profile]:
    """Every profile of ``directory`` (default: the bundled ones), sorted by id."""
    return list(_all(Path(directory) if directory is not None else PROFILE_DIR).values())


def get(profile_id: str) -> Profile:
    """Look up a profile by id, or by the path of a profile file.

    Raises:
        EdgecError: unknown id, listing the valid ones.
    """
    if profile_id.endswith(".toml") and Path(profile_id).is_file():
        return load_file(Path(profile_id))
    profiles = _all()
    if profile_id not in profiles:
        raise EdgecError(
            f"unknown target '{profile_id}'; valid targets: {choices(profiles)} "
            "(or the path of a profile .toml file)"
        )
    return profiles[profile_id]
