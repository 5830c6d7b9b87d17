"""Where a command's output goes: results on stdout (one JSON document with --json), everything else on stderr.

`Output(json_output)` is made once per command; under torchrun only rank 0 speaks.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console

from catdog_cli.cli import progress
from catdog_cli.core.formatting import printable
from catdog_cli.core.world import World


def speaks() -> bool:
    """Under torchrun every rank runs this CLI; only rank 0 speaks."""
    return World.from_env().main


class Output:
    """--json consumed in one place: `console` is stdout for people (stderr when stdout carries JSON), `progress`
    is stderr (bars, epoch lines, warnings), `result` prints the JSON document or calls the human renderer."""

    def __init__(self, json_output: bool):
        self.json = json_output
        self.console: Console = progress.console(stderr=json_output, quiet=not speaks())
        self.progress: Console = progress.console(stderr=True, quiet=not speaks())

    def events(self) -> progress.RichEvents:
        """Progress bars and notes of the work in progress, on stderr."""
        return progress.RichEvents(self.progress)

    def line(self, text: object) -> None:
        """A plain line for people (a path, a count): printed as it is, no markup."""
        self.console.print(printable(text), markup=False, highlight=False)

    def emit(self, document: Any) -> None:
        if speaks():
            from catdog_cli.core.records import to_json

            sys.stdout.write(to_json(document) + "\n")
