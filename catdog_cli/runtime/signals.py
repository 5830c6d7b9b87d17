"""Leaving cleanly on a signal: SIGTERM is Ctrl-C for every command, and training stops after its current step."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextmanager
def terminate_interrupts() -> Iterator[None]:
    """SIGTERM (`kill`, a batch scheduler's preemption) handled as Ctrl-C is: a KeyboardInterrupt in the main
    thread, so that every `finally` runs (temp files removed, a run's lock released) and the command exits with
    130. Left to its default, SIGTERM ends the process on the spot and leaves them behind. Training's
    `StopRequest` takes SIGTERM over for its epochs (finish the step, save last.pt) and gives it back."""
    try:
        previous, installed = signal.signal(signal.SIGTERM, _interrupt), True
    except ValueError:  # not the main thread: signals stay with whoever owns them
        previous, installed = None, False
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


class StopRequest:
    """SIGINT/SIGTERM during training: finish the current step, save, and leave cleanly."""

    def __init__(self):
        self.requested = False

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        def handler(signum, frame):
            if self.requested:  # a second Ctrl-C means now
                raise KeyboardInterrupt
            self.requested = True

        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for s in previous:
                signal.signal(s, handler)
        except ValueError:  # not the main thread: signals stay with whoever owns them
            previous = {}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
