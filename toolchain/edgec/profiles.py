"""Device profiles: one TOML file per device, checked by one schema.

A profile states what a device can do (precisions, runtime, GPU arch, TensorRT/JetPack version,
Edge TPU variant, power sensor, memory) and which target kind builds for it. Adding a device
that an existing target serves is one file in the top-level ``profiles/`` folder. Unknown keys are rejected, naming the file and
the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgec.agent import vocab
from edgec.errors import EdgecError, choices
from edgec.resources import data_dir

PROFILE_DIR = data_dir("profiles")

PRECISIONS = vocab.PRECISIONS
TARGET_KINDS = vocab.TARGET_KINDS
RUNTIMES = vocab.RUNTIMES
POWER_SENSORS = ("none", *vocab.SENSORS)


def _one_of(values):
    def check(v):
        return None if v in values else f"expected one of {choices(values)}"

    return check


def _list_of(values):
    def check(v):
        if not isinstance(v, list) or not v:
            return "expected a non-empty list"
        bad = [x for x in v if x not in values]
        return f"unknown values {bad}; valid: {choices(values)}" if bad else None

    return check


def _positive(v):
    return None if v > 0 else "expected a positive number"


def _non_negative(v):
    return None if v >= 0 else "expected a number >= 0"


# key -> (type(s), required, extra check or None)
TOP_LEVEL: dict[str, tuple] = {
    "id": (str, True, None),
    "device": (str, True, None),
    "target": (str, True, _one_of(TARGET_KINDS)),
    "runtime": (str, True, _one_of(RUNTIMES)),
    "precisions": (list, True, _list_of(PRECISIONS)),
    "default_precision": (str, True, _one_of(PRECISIONS)),
    "arch": (str, False, _one_of(("x86_64", "aarch64", "armv7l", "any"))),
    "cpu": (str, False, None),
    "threads": (int, False, _positive),
    "memory_mb": (int, False, _positive),
    "int8_io": (str, False, _one_of(("int8", "uint8"))),
    "python": (str, False, None),
    "notes": (str, False, None),
}

SECTIONS: dict[str, dict[str, tuple]] = {
    "power": {
        "sensor": (str, True, _one_of(POWER_SENSORS)),
        "rails": (list, False, None),
        "board_rail": (str, False, None),
        "note": (str, False, None),
    },
    "edgetpu": {
        "variant": (str, True, _one_of(("usb", "pci", "devboard", "m2", "dual-m2", "som"))),
        "num_tpus": (int, False, _positive),
        "min_runtime_version": (int, False, _positive),
        "cache_mb": ((int, float), False, _positive),
        "clock": (str, False, _one_of(("std", "max"))),
        "compile_timeout_s": (int, False, _positive),
    },
    "tensorrt": {
        "gpu": (str, True, None),
        "compute_capability": (str, True, None),
        "gpu_arch": (str, True, None),
        "jetpack": (str, False, None),
        "tensorrt": (str, True, None),
        "cuda": (str, False, None),
        "onnx_opset": (int, True, _positive),
        "dla_cores": (int, False, _non_negative),
        "workspace_mb": (int, False, _positive),
    },
}

# A target kind's profiles must carry that target's section.
REQUIRED_SECTION = {"edgetpu": "edgetpu", "tensorrt": "tensorrt"}


@dataclasses.dataclass(frozen=True)
class Profile:
    """A validated device profile."""

    id: str
    device: str
    target: str
    runtime: str
    precisions: tuple[str, ...]
    default_precision: str
    arch: str = "any"
    cpu: str | None = None
    threads: int | None = None
    memory_mb: int | None = None
    int8_io: str = "int8"
    python: str | None = None
    notes: str | None = None
    power: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"sensor": "none"})
    edgetpu: Mapping[str, Any] | None = None
    tensorrt: Mapping[str, Any] | None = None
    path: Path | None = None

    def supports(self, precision: str) -> bool:
        return str(precision) in self.precisions

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["precisions"] = list(self.precisions)
        data["path"] = str(self.path) if self.path else None
        return {k: v for k, v in data.items() if v is not None}


def _check_table(table: Mapping[str, Any], spec: dict[str, tuple], where: str) -> None:
    for key in table:
        if key not in spec and key not in SECTIONS:
            raise EdgecError(f"{where}: unknown key '{key}'; valid keys: {choices(spec)}")
    for key, (types, required, check) in spec.items():
        if key not in table:
            if required:
                raise EdgecError(f"{where}: missing required key '{key}'")
            continue
        value = table[key]
        if not isinstance(value, types) or (types is int and isinstance(value, bool)):
            tname = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
            raise EdgecError(
                f"{where}: key '{key}' must be {tname}, got {type(value).__name__} {value!r}"
            )
        if check is not None:
            problem = check(value)
            if problem:
                raise EdgecError(f"{where}: key '{key}' = {value!r}: {problem}")


def validate(data: Mapping[str, Any], path: Path) -> Profile:
    """Check one parsed profile against the schema.

    Raises:
        EdgecError: naming the file and the offending key.
    """
    where = str(path)
    _check_table(data, TOP_LEVEL, where)
    for section, spec in SECTIONS.items():
        if section in data:
            if not isinstance(data[section], dict):
                raise EdgecError(f"{where}: '{section}' must be a table")
            for key in data[section]:
                if key not in spec:
                    raise EdgecError(
                        f"{where}: unknown key '{section}.{key}'; valid keys: {choices(spec)}"
                    )
            _check_table(data[section], spec, f"{where} [{section}]")
    if data["id"] != path.stem:
        raise EdgecError(f"{where}: id '{data['id']}' must match the file name '{path.stem}'")
    if data["default_precision"] not in data["precisions"]:
        raise EdgecError(
            f"{where}: default_precision '{data['default_precision']}' is not in precisions "
            f"{data['precisions']}"
        )
    needed = REQUIRED_SECTION.get(data["target"])
    if needed and needed not in data:
        raise EdgecError(f"{where}: target '{data['target']}' needs a [{needed}] table")
    fields = {k: v for k, v in data.items() if k in TOP_LEVEL or k in SECTIONS}
    fields["precisions"] = tuple(fields["precisions"])
    return Profile(**fields, path=path)


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


@lru_cache(maxsize=1)
def _all() -> dict[str, Profile]:
    return {p.stem: load_file(p) for p in sorted(PROFILE_DIR.glob("*.toml"))}


def all_profiles() -> list[Profile]:
    """Every bundled profile, sorted by id."""
    return list(_all().values())


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
