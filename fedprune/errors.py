"""Errors caused by what the user asked for; the CLI prints them plainly (exit code 2)."""


class UserError(Exception):
    """Bad input or missing prerequisites; the message says what to change."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM (what `kill`, `timeout` and Kubernetes send) or SIGINT, raised in the main
    thread so a run ends as a Ctrl-C does: the round in flight is dropped, never half
    published."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number


def signal_of(error: KeyboardInterrupt) -> int:
    """The signal behind an interrupt: `Interrupted`'s own, else Ctrl-C's SIGINT."""
    import signal

    return error.signal_number if isinstance(error, Interrupted) else signal.SIGINT


def raise_on_signals() -> None:
    """Turn SIGTERM and SIGINT into `Interrupted` in this (main) thread."""
    import signal

    def interrupt(signal_number: int, _frame: object) -> None:
        raise Interrupted(signal_number)

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, interrupt)


def ignore_signals() -> None:
    """For helper processes (the tracking process, client workers): the main process gets
    Ctrl-C's SIGINT too and ends them itself, after it has marked the run."""
    import signal

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, signal.SIG_IGN)


class RunInterrupted(Exception):
    """A run ended by a signal; the message says what was kept and how to resume."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signal_number
