"""The one exception family for problems a user can act on.

The CLI prints these as one line (``Error: ...``) and exits with :attr:`EdgecError.exit_code`:
2 for bad usage or bad input, 1 for a failed check or budget.
"""

from __future__ import annotations

# One class for the host and the agent: the agent runs alone on a device (standard library only),
# so the class is defined in its package and is the same class here.
from edgec.agent.errors import EdgecError

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


class CheckFailed(EdgecError):
    """A verification check or a budget (accuracy drop, size, latency) was not met."""

    exit_code = EXIT_CHECK_FAILED


class MissingExtra(EdgecError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed; "
            f"install it with: pip install 'edgec[{extra}]'"
        )


def choices(values) -> str:
    """Format valid choices for an error message."""
    return ", ".join(sorted(str(v) for v in values))


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop (SIGINT, SIGTERM, SIGHUP); the CLI exits with 128 + signal.

    A ``KeyboardInterrupt`` raised by user code (a data function) is not one: only the signal
    handlers the CLI installs raise this, so it can tell a real request to stop from a data error.
    """

    def __init__(self, signum: int):
        import signal

        self.signum = int(signum)
        try:
            self.name = signal.Signals(self.signum).name
        except ValueError:
            self.name = f"signal {self.signum}"
        super().__init__(self.name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
