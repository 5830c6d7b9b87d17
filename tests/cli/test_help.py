"""`--help` as people read it, for the root and every command: no Python types where a value's name goes (issue 26
saw `<bool>` beside every flag and `<list[Path]>`), and descriptions that flow instead of breaking where the
source wraps ("starts a new run from a trained / model" at any width)."""

from __future__ import annotations

import re

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from catdog_cli.cli.app import app

ROOT = typer.main.get_command(app)
COMMANDS = {"catdog": ROOT, **ROOT.commands}  # type: ignore[attr-defined]


def _help(name: str, columns: int) -> str:
    args = ["--help"] if name == "catdog" else [name, "--help"]
    result = CliRunner(env={"COLUMNS": str(columns)}).invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_no_value_is_named_by_its_python_type():
    flags = lists = 0
    for name, command in COMMANDS.items():
        ctx = typer.Context(command)
        for param in [*command.params, command.get_help_option(ctx)]:
            shown = param.display_type_rich(ctx=ctx)
            where = f"{name} {param.name}: {shown!r}"
            assert shown is None or ("[" not in shown and shown != "<bool>"), where
            if getattr(param, "is_flag", False):
                assert not shown, where  # --json, --augment/--no-augment: nothing to type after them
                flags += 1
            elif getattr(param, "multiple", False) or param.nargs != 1:
                assert shown is None or shown == param.metavar, where  # NAME,... as declared, or paths...
                lists += 1
    assert flags >= 20 and lists >= 4  # the walk saw every command: --json alone is on eight of them


@pytest.mark.parametrize("name", COMMANDS)
def test_help_shows_no_python_type(name):
    shown = _help(name, 200)
    assert "<bool>" not in shown and "list[" not in shown


@pytest.mark.parametrize("name", COMMANDS)
def test_each_paragraph_of_help_is_one_line_on_a_wide_terminal(name):
    """At 400 columns nothing needs wrapping: a paragraph on two lines was broken where its source wraps, and an
    option's help on two rows likewise."""
    lines = _help(name, 400).splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("Usage:"))
    end = next(i for i, line in enumerate(lines) if line.startswith("╭"))
    description = "\n".join(line.strip() for line in lines[start + 1 : end]).strip()
    assert description, name
    for paragraph in description.split("\n\n"):
        assert "\n" not in paragraph, paragraph
    rows = [line for line in lines[end:] if line.startswith("│")]
    continued = [row for row in rows if not re.match(r"│ {1,4}\S", row)]  # a row whose name column is empty
    assert rows and not continued, continued


def test_train_help_says_its_sentences_whole():
    assert "`--weights runs/x/best.pt` starts a new run from a trained model (same backbone;" in _help("train", 400)
