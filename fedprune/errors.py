"""Errors caused by what the user asked for; the CLI prints them plainly (exit code 2)."""


class UserError(Exception):
    """Bad input or missing prerequisites; the message says what to change."""
