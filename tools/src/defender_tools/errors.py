"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
    """Bad input or environment: printed as one line, exit status 2, no traceback."""
