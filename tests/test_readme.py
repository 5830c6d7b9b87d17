"""README.md's defaults are the code's: each table and sentence that states a default is read here and compared
with core/config.py, core/defaults.py and what `--help` says (the option's own default)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import typer

from catdog_cli.cli.app import app
from catdog_cli.core.config import TrainConfig
from catdog_cli.core.defaults import STRATEGIES

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
CONFIG = TrainConfig("data")


def _command(name: str) -> click.Command:
    return typer.main.get_command(app).commands[name]


def _default(command: str, option: str) -> object:
    return next(p.default for p in _command(command).params if p.name == option)


def test_the_strategy_table_gives_each_strategys_default_lr():
    rows = re.findall(r"^\| `([a-z-]+)` \| .* \| ([0-9.e-]+) \|$", README, re.MULTILINE)
    table = {name: float(lr) for name, lr in rows if name in STRATEGIES}
    assert table == {name: strategy.lr for name, strategy in STRATEGIES.items()}
    lr_help = next(p.help for p in _command("train").params if p.name == "lr")  # --help said freeze 1e-3
    parts = {part.split(" for ")[0].split()[-1]: part.split(" for ")[1] for part in lr_help.split(";")}
    assert all(s.name in parts[f"{s.lr:g}"] for s in STRATEGIES.values()), lr_help


def test_readme_numbers_are_the_configs_defaults():
    stated = {
        "lr_ratio": re.search(r"\(default ratio (\S+?)\)", README).group(1),
        "freeze_epochs": re.search(r"`--freeze-epochs` \(default (\d+)\)", README).group(1),
        "val_split": re.search(r"split for you: --val-split (\S+),", README).group(1),
        "epochs": re.search(r"`catdog train --data D .*?\[--epochs (\d+)\]", README, re.DOTALL).group(1),
    }
    assert {k: float(v) for k, v in stated.items()} == {k: float(getattr(CONFIG, k)) for k in stated}
    for command in ("train", "compare", "lr-find"):  # the CLI's defaults are the config's
        assert _default(command, "val_split") == CONFIG.val_split and _default(command, "seed") == CONFIG.seed
    assert _default("train", "epochs") == CONFIG.epochs
    compare_epochs = re.search(r"`catdog compare --data D .*?\[--epochs (\d+)\]", README, re.DOTALL).group(1)
    assert int(compare_epochs) == _default("compare", "epochs")


def test_lr_find_range_and_steps_are_the_codes():
    from catdog_cli.training.lr_find import END_LR, START_LR, STEPS

    start, end, steps = re.search(r"rate grows from (\S+) to (\S+) over (\d+) steps", README).groups()
    assert (float(start), float(end), int(steps)) == (START_LR, END_LR, STEPS)
    assert (_default("lr-find", "start_lr"), _default("lr-find", "end_lr"), _default("lr-find", "steps")) == (
        START_LR,
        END_LR,
        STEPS,
    )


def test_what_may_change_on_resume_is_what_resume_allows():
    from catdog_cli.training.resume import RELOCATABLE

    sentence = re.search(r"Options typed again must match; only (.*?) may change", README, re.DOTALL).group(1)
    assert re.findall(r"`--([a-z-]+)`", sentence) == [o.replace("_", "-") for o in RELOCATABLE]
    resume_help = " ".join(next(p.help for p in _command("train").params if p.name == "resume").split())
    assert all(f"--{o.replace('_', '-')}" in resume_help for o in RELOCATABLE)
