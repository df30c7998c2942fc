"""One exception type for every error a user can cause; the CLI prints it as one line."""


class UserError(Exception):
    """Bad input or environment: the message says what went wrong and what to do."""
