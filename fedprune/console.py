"""The command line's one console. On a terminal rich draws live tables at the terminal's
width; in a pipe, a CI log or a file nothing is redrawn or wrapped at 80 columns, so every
message, command and table row stays on one line (and stays pasteable)."""

from __future__ import annotations

from rich.console import Console

LOG_WIDTH = 400
"""Columns in a pipe: wide enough that no line of ours folds."""

console = Console()


def fit_output() -> None:
    """Called once the command starts (capture and redirection are known by then)."""
    if not console.is_terminal:
        console.width = LOG_WIDTH  # a terminal keeps following its own width
