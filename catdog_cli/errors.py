"""The one exception type a user can cause: the CLI prints its message as one line, no traceback."""


class CatdogError(Exception):
    """A problem with the user's input or environment, explained in one line."""
