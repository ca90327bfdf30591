"""Exceptions that name a user mistake.

The command line turns a :class:`UserInputError` into one line on standard error and a non-zero exit;
anything else is a crash and keeps its traceback in the log.
"""


class UserInputError(ValueError):
    """A problem with the user's data or options: the message names the culprit and the fix."""


class NoUsableDataError(UserInputError):
    """Nothing usable remains (every run was excluded)."""
