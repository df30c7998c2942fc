"""One exception type for every error a user can cause; the CLI prints it as one line."""


class UserError(Exception):
    """Bad input or environment: the message says what went wrong and what to do."""


def error_line(e: UserError | OSError) -> str:
    """The one line a command prints for a user error or an OS error (disk full, permissions,
    vanished files), never a traceback."""
    if isinstance(e, UserError):
        return f"error: {e}"
    where = f" ({e.filename})" if e.filename else ""
    return f"error: {e.strerror or e}{where}"
