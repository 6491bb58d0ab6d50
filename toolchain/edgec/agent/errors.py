"""The agent's errors: one line a person can act on, printed as ``Error: ...``."""

EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3


class AgentError(Exception):
    """Bad input or an impossible request (exit code 2)."""

    exit_code = EXIT_BAD_INPUT


class Unavailable(AgentError):
    """A runtime, delegate or sensor this device does not have (exit code 3).

    The message says what is missing and how to get it.
    """

    exit_code = EXIT_UNAVAILABLE
