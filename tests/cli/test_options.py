"""One source of truth: the commands' option defaults and bounds are the config's, and --help says so."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import typer.main
from helpers import catdog

from catdog_cli.cli.app import app
from catdog_cli.cli.options import DEFAULT, _lr_defaults
from catdog_cli.core.config import TrainConfig
from catdog_cli.core.defaults import COMPARE_EPOCHS, STRATEGIES
from catdog_cli.core.validate import LIMITS, Checked

COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]
FIELDS = TrainConfig.field_names()


def _options(command: str) -> dict[str, click.Parameter]:
    return {p.name: p for p in COMMANDS[command].params}


@pytest.mark.parametrize("command", ["train", "compare", "lr-find"])
def test_every_option_that_is_a_config_field_defaults_to_the_configs_default(command):
    compared = 0
    for name, param in _options(command).items():
        field = "compile" if name == "compile_model" else name
        if field not in FIELDS or field == "data" or (command == "compare" and field == "epochs"):
            continue
        assert param.default == DEFAULT[field], (command, name)
        compared += 1
    assert compared >= 10  # the recipe, runtime and model options are all read from the config


def test_compare_trains_its_cells_shorter_by_its_own_named_default():
    assert _options("compare")["epochs"].default == COMPARE_EPOCHS != DEFAULT["epochs"]


@pytest.mark.parametrize("name", ["epochs", "batch_size", "image_size", "freeze_epochs", "patience", "val_split"])
def test_click_bounds_are_the_config_limits(name):
    param = _options("train")[name]
    assert param.min == LIMITS[name][0]


def test_help_states_each_strategys_default_lr_as_the_code_uses_it():
    assert "3e-03" not in _lr_defaults() and f"{STRATEGIES['freeze'].lr:g} for freeze" in _lr_defaults()
    help_text = " ".join(catdog("train", "--help").output.split())
    assert "0.003 for freeze" in help_text and "0.0001 for finetune" in help_text


def test_help_groups_options_into_panels():
    out = catdog("train", "--help").output
    for panel in ("Data", "Model", "Recipe", "Runtime", "Output"):
        assert f"─ {panel} " in out


def test_the_config_is_built_from_the_parsed_options_by_name(monkeypatch, tmp_path):
    """Every TrainConfig field the train command offers reaches the config (no hand-written keyword list)."""
    seen = {}

    def fake_fit(config, out, events, name=None):
        seen["config"] = config
        raise SystemExit(0)

    import catdog_cli.training.loop as loop

    monkeypatch.setattr(loop, "fit", fake_fit)
    monkeypatch.setattr(TrainConfig, "check", lambda self, weights=True: Checked(self, Path(self.data)))
    catdog("train", "--data", str(tmp_path), "--epochs", "7", "--mixup", "0.3", "--compile", "--ema-decay", "0.5")
    config = seen["config"].given
    assert (config.epochs, config.mixup, config.compile, config.ema_decay, config.data) == (
        7,
        0.3,
        True,
        0.5,
        str(tmp_path),
    )
