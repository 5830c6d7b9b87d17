"""The `catdog` app: the root options, one-line errors, and the commands registered from their modules.

One module per command family (huggingface_hub's CLI shape): fetch.py, train.py (train, compare, lr-find) and
use.py (evaluate, predict, export); their shared options are declared once in options.py, output in output.py.
"""

from __future__ import annotations

import inspect
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from catdog_cli import __version__
from catdog_cli.cli import check, doctor, fetch, runs, train, use
from catdog_cli.core.defaults import THREADS_ENV
from catdog_cli.core.formatting import printable
from catdog_cli.errors import OUT_OF_MEMORY, CatdogError, out_of_memory
from catdog_cli.runtime import cpu_load
from catdog_cli.runtime.environment import stack_failure
from catdog_cli.runtime.signals import terminate_interrupts


@dataclass
class Session:
    """What the root options set for the whole invocation (click's ctx.obj)."""

    debug: bool = False


def _error_line(message: str) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {escape(printable(message))}", highlight=False, soft_wrap=True)


def _user_message(exc: Exception) -> str:
    """One line for an error of the user's input or environment. An OSError that no check foresaw (a file that
    cannot be read, a full disk) is the environment's, not a bug: its reason and the file it concerns."""
    if out_of_memory(exc):
        return OUT_OF_MEMORY
    if stack_failure(exc):
        return stack_failure(exc)
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return str(exc)


# click's base error, as the click that typer runs on defines it (typer may vendor its own copy of click)
CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def flowing(text: str | None) -> str | None:
    """A help text with each paragraph on one line, for the terminal to wrap: typer's rich help keeps the source's
    line breaks after the first paragraph, so descriptions broke mid-sentence at any width."""
    if text is None:
        return None
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in inspect.cleandoc(text).split("\n\n"))


class ListArgument(TyperArgument):
    """An argument that takes several values: its name and '...' (paths...) say so, without the Python type typer
    shows beside it (<list[Path]>)."""

    def display_type_rich(self, ctx: click.Context) -> str | None:
        return None


def plain_help(command: click.Command) -> None:
    """`--help` as people read it: paragraphs that flow, no metavar on a flag (typer shows <bool>), no Python type
    beside a list. A list option declares its own metavar (NAME,...)."""
    command.help = flowing(command.help)
    for param in command.params:
        if isinstance(param, TyperOption) and param.is_flag:
            param.metavar = ""
        elif type(param) is TyperArgument and param.nargs != 1:
            param.__class__ = ListArgument  # the same argument, drawn without its type


class PlainHelp:
    """Mixed into catdog's group and its commands: their help drawn as `plain_help` says, --help itself included."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plain_help(self)  # type: ignore[arg-type]

    def get_help_option(self, ctx: click.Context) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option


class CatdogCommand(PlainHelp, TyperCommand):
    """Every catdog command."""


class CatdogGroup(PlainHelp, TyperGroup):
    """Errors a user can cause (running out of GPU memory included) end as one red line and exit code 1;
    `--debug` shows the traceback instead. An option click refuses (a word where a number goes, a value out of
    range) is one line too, with exit code 2. Ctrl-C, and SIGTERM alike, exit with 130, as shells do."""

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except CLICK_ERROR as exc:  # click's own usage errors, drawn as a one-line error, not a box
            hint = f" (see `{exc.ctx.command_path} --help`)" if getattr(exc, "ctx", None) else ""
            _error_line(" ".join(exc.format_message().split()) + hint)
            code = exc.exit_code
        except typer.Abort:
            _error_line("aborted")
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with terminate_interrupts():  # SIGTERM is Ctrl-C: every command cleans up after itself, exit 130
                return super().invoke(ctx)
        except Exception as exc:
            debug = isinstance(ctx.obj, Session) and ctx.obj.debug
            if debug or not (isinstance(exc, (CatdogError, OSError)) or out_of_memory(exc) or stack_failure(exc)):
                raise
            if isinstance(exc, BrokenPipeError):  # `catdog ... | head`: typer leaves quietly
                raise
            _error_line(_user_message(exc))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            if isinstance(ctx.obj, Session) and ctx.obj.debug:
                raise
            Console(stderr=True).print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=CatdogGroup,
    help="Image classification by transfer learning: fetch a dataset, train a pretrained backbone on it, "
    "evaluate, predict, and compare backbones and strategies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"catdog {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    threads: int | None = typer.Option(
        None, min=1, help="CPU threads for torch (default: the cores other processes leave free; `catdog doctor`)."
    ),
) -> None:
    ctx.obj = Session(debug=debug)
    cpu_load.mark()  # the window in which other processes' CPU use is measured starts before torch loads
    if threads is not None:
        os.environ[THREADS_ENV] = str(threads)  # read where torch is set up, and by torchrun's ranks
    # Pillow warns about images over 89 M pixels; catdog applies its own limit and names each file it refuses
    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")


app.command(cls=CatdogCommand)(fetch.fetch)
app.command(cls=CatdogCommand)(train.train)
app.command(cls=CatdogCommand)(use.evaluate)
app.command(cls=CatdogCommand)(use.predict)
app.command(cls=CatdogCommand)(use.export)
app.command(cls=CatdogCommand, help=train.COMPARE_HELP)(train.compare)
app.command("lr-find", cls=CatdogCommand)(train.lr_find)
app.command(cls=CatdogCommand)(runs.runs)
app.command(cls=CatdogCommand)(check.check)
app.command(cls=CatdogCommand)(doctor.doctor)


def main() -> None:
    clean = False
    try:
        app()
        clean = True
    except SystemExit as exc:
        clean = exc.code in (0, None)
        raise
    finally:
        # only a command that trained can have joined a process group; after an error, exit without waiting on it
        if clean and "catdog_cli.runtime.distributed" in sys.modules:
            sys.modules["catdog_cli.runtime.distributed"].shutdown()
