"""Progress display (rich) for steps that take more than a second or two.

Shown on stderr when it is a terminal (or when ``EDGEC_PROGRESS=1``); silent otherwise, so
logs in CI stay readable.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


def _enabled() -> bool:
    env = os.environ.get("EDGEC_PROGRESS")
    if env is not None:
        return env not in ("0", "", "false", "no")
    return sys.stderr.isatty()


class Progress:
    """A thin wrapper over rich's Progress; a no-op when disabled."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = _enabled() if enabled is None else enabled
        self._rich = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            self._rich = RichProgress(
                SpinnerColumn(), TextColumn("[progress.description]{task.description}"),
                BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(), console=Console(stderr=True), transient=False,
            )
            self._rich.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)
            self._rich = None

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[_Task]:
        """A step with an optional count; yields an object with ``advance(n)`` and ``info(text)``."""
        if self._rich is None:
            yield _Task(None, None)
            return
        task_id = self._rich.add_task(description, total=total, info="")
        try:
            yield _Task(self._rich, task_id)
        finally:
            if total is None:
                self._rich.update(task_id, total=1, completed=1)
            self._rich.stop_task(task_id)


class _Task:
    def __init__(self, rich, task_id):
        self._rich, self._id = rich, task_id

    def advance(self, n: int = 1) -> None:
        if self._rich is not None:
            self._rich.advance(self._id, n)

    def info(self, text: str) -> None:
        if self._rich is not None:
            self._rich.update(self._id, info=text)
