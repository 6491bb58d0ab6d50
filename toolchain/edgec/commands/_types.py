"""Click parameter types shared by the commands."""

from __future__ import annotations

import math
from pathlib import Path

import click


class FiniteFloat(click.FloatRange):
    """A float, optionally within bounds, that is never NaN or infinite.

    Click's ``float`` and ``FloatRange`` take ``nan`` and ``inf``; a NaN budget fails every
    comparison, so every build would fail (or pass) it.
    """

    name = "number"

    def __init__(self, min: float | None = None, max: float | None = None, **kwargs) -> None:  # noqa: A002
        super().__init__(min, max, **kwargs)

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)

    def _describe_range(self) -> str:
        # Click writes "x<=None" for a range with neither bound; an unbounded number has none.
        if self.min is None and self.max is None:
            return ""
        return super()._describe_range()


#: Any finite float.
FINITE = FiniteFloat()


class OutputDir(click.Path):
    """A directory path that is not the empty string (``-o ""`` would mean the current folder)."""

    def __init__(self) -> None:
        super().__init__(path_type=Path)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path; name a directory (e.g. dist)", param, ctx)
        return super().convert(value, param, ctx)


class FiniteOrAuto(FiniteFloat):
    """A finite float, or ``auto`` (the build searches the value)."""

    name = "number|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        return super().convert(value, param, ctx)


#: A finite float or ``auto``.
FINITE_OR_AUTO = FiniteOrAuto()
