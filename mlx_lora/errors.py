"""Errors a person can act on.

:class:`UserError` carries a message written for the user (which file, which
line, what to do). The CLI prints it without a traceback and exits with 2; the
app shows it in a dialog. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, explained in ``str(self)``."""


class Cancelled(Exception):
    """A job stopped because its ``should_stop`` said so."""
