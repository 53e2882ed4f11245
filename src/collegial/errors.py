"""The one exception type for mistakes a user can make (bad arguments, missing data, ...).

The CLI turns a :class:`UserError` into a single line on stderr and exit code 2.
"""


class UserError(Exception):
    """An error caused by the user's input; reported as one line, exit code 2."""
