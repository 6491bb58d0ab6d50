"""The device profile as the target kinds see it, and the checks its tables are written with.

A profile's top-level keys and its ``[power]`` table are the same for every kind; a kind adds its
own table (``[edgetpu]``, ``[tensorrt]``) by naming it in :attr:`edgec.targets.base.Target.section`
with a :data:`Spec`. Loading and listing profiles is :mod:`edgec.profiles`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError, choices

#: key -> (type or types, required, extra check returning a problem or None)
Spec = dict[str, tuple[Any, bool, Callable[[Any], str | None] | None]]


def one_of(values) -> Callable[[Any], str | None]:
    """A check that the value is one of ``values``."""

    def check(v):
        return None if v in values else f"expected one of {choices(values)}"

    return check


def list_of(values) -> Callable[[Any], str | None]:
    """A check that the value is a non-empty list of ``values``."""

    def check(v):
        if not isinstance(v, list) or not v:
            return "expected a non-empty list"
        bad = [x for x in v if x not in values]
        return f"unknown values {bad}; valid: {choices(values)}" if bad else None

    return check


def positive(v) -> str | None:
    """A check that the value is > 0."""
    return None if v > 0 else "expected a positive number"


def non_negative(v) -> str | None:
    """A check that the value is >= 0."""
    return None if v >= 0 else "expected a number >= 0"


def check_table(table: Mapping[str, Any], spec: Spec, where: str, allowed: tuple[str, ...] = ()) -> None:
    """Check one TOML table against ``spec``; keys in ``allowed`` (sub-tables) pass unchecked.

    Raises:
        EdgecError: an unknown or missing key, a wrong type, a failed check (``where`` names the file).
    """
    for key in table:
        if key not in spec and key not in allowed:
            raise EdgecError(f"{where}: unknown key '{key}'; valid keys: {choices(spec)}")
    for key, (types, required, check) in spec.items():
        if key not in table:
            if required:
                raise EdgecError(f"{where}: missing required key '{key}'")
            continue
        value = table[key]
        if not isinstance(value, types) or (types is int and isinstance(value, bool)):
            tname = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
            raise EdgecError(f"{where}: key '{key}' must be {tname}, got {type(value).__name__} {value!r}")
        if check is not None:
            problem = check(value)
            if problem:
                raise EdgecError(f"{where}: key '{key}' = {value!r}: {problem}")


@dataclasses.dataclass(frozen=True)
class Profile:
    """A validated device profile.

    A target kind's own table is ``profile.sections[name]``, also read as an attribute
    (``profile.tensorrt``): ``None`` when the profile has no such table but some kind defines it.
    """

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
    #: the kinds' tables this profile carries: name -> table
    sections: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    path: Path | None = None
    #: every kind's table name (an absent one reads as None)
    section_names: frozenset[str] = dataclasses.field(default=frozenset(), repr=False, compare=False)

    def __getattr__(self, name: str) -> Any:
        # only called for names that are no field: a kind's table
        if not name.startswith("_"):
            fields = self.__dict__
            if name in fields.get("sections", {}):
                return fields["sections"][name]
            if name in fields.get("section_names", ()):
                return None
        raise AttributeError(f"'Profile' object has no attribute '{name}'")

    def section(self, name: str) -> Mapping[str, Any] | None:
        """The profile's ``[name]`` table, or ``None``."""
        return self.sections.get(name)

    def supports(self, precision: str) -> bool:
        return str(precision) in self.precisions

    def to_json(self) -> dict[str, Any]:
        """The profile as the manifest records it: the kind's table at the top level, as in the file."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("sections", "section_names", "path")}
        data.update({name: dict(table) for name, table in self.sections.items()})
        data["power"] = dict(self.power)
        data["precisions"] = list(self.precisions)
        data["path"] = str(self.path) if self.path else None
        return {k: v for k, v in data.items() if v is not None}
