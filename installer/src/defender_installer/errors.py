"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
    """A bad flag, a missing file, an unusable agent tree: shown as one line, exit code 2.

    Tracebacks are for bugs; anything the user can correct raises this instead.
    """
