"""The agent's errors: one line a person can act on, printed as ``Error: ...``."""

EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3


class EdgecError(Exception):
    """The one exception family of edgec and its agent: a problem a person can act on (bad input,
    bad usage, something unavailable), printed as one line. Defined here because the agent ships
    alone (standard library only); the host's :mod:`edgec.errors` is the same class.
    """

    exit_code = EXIT_BAD_INPUT


class AgentError(EdgecError):
    """Bad input or an impossible request on the device (exit code 2)."""

    exit_code = EXIT_BAD_INPUT


class Unavailable(AgentError):
    """A runtime, delegate or sensor this device does not have (exit code 3).

    The message says what is missing and how to get it.
    """

    exit_code = EXIT_UNAVAILABLE
