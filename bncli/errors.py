"""Errors a user can act on. The CLI prints each as one line and exits with its code."""


class BncliError(Exception):
    """Bad input: a flag, a config field, a name. Exit code 2, like any usage error."""

    exit_code = 2


class RunError(BncliError):
    """The input was fine but the run could not happen (disk, memory). Exit code 1."""

    exit_code = 1
