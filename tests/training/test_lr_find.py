"""lr-find: the suggestion lies where the loss falls, the test stops when the loss blows up, the outputs."""

from __future__ import annotations

import itertools
import json
import math

import pytest
from helpers import TINY, catdog, error_line, labeled_folder, ok_json

from catdog_cli.core.config import TrainConfig
from catdog_cli.training.lr_find import centred_average, find_lr, suggest


def synthetic(lrs: list[float], noise: float = 0.0) -> list[float]:
    """Flat at 1.0 below 1e-4, falling to 0.2 at 1e-2, then blowing up; optional deterministic wiggle."""
    out = []
    for i, lr in enumerate(lrs):
        x = math.log10(lr)
        loss = 1.0 if x < -4 else 1.0 - 0.4 * (x + 4) if x < -2 else 0.2 + 2.0 * (x + 2) ** 2
        out.append(loss + noise * (1 if i % 2 else -1))
    return out


@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_suggestion_lies_on_the_descending_part_of_the_curve(noise):
    lrs = [1e-7 * (1e8) ** (i / 99) for i in range(100)]
    losses = synthetic(lrs, noise)
    lr = suggest(lrs, losses)
    assert lr is not None and 1e-4 < lr < 1e-2  # where the clean curve falls, not at its flat start or its minimum
    i = lrs.index(lr)
    smooth = centred_average(losses)
    assert smooth[i + 1] < smooth[i - 1]


def test_no_suggestion_without_a_descent():
    lrs = [10 ** (-6 + i / 10) for i in range(40)]
    assert suggest(lrs, [1.0 + 0.1 * i for i in range(40)]) is None


def test_freeze_unfreeze_gets_its_curve_like_every_strategy(tmp_path):
    """A range test sets its run up for one epoch; the rule that freeze-unfreeze unfreezes within its epochs is a
    training run's, checked by check_lr_find as for one: the run's setup refused it after the check let it through."""
    root = labeled_folder(tmp_path / "data", per_class=4)
    config = TrainConfig(str(root), weights="none", **{**TINY, "backbone": "squeezenet1_1"})
    result = find_lr(config, ["freeze-unfreeze", "freeze"], tmp_path / "lr", steps=12)
    assert [(c["strategy"], len(c["lrs"]) > 0) for c in result["curves"]] == [
        ("freeze-unfreeze", True),
        ("freeze", True),
    ]


def test_range_test_grows_the_lr_exponentially_and_stops_when_the_loss_blows_up(tmp_path):
    root = labeled_folder(tmp_path / "data", per_class=8)
    config = TrainConfig(str(root), weights="none", **{**TINY, "backbone": "squeezenet1_1"})
    result = find_lr(config, ["discriminative"], tmp_path / "lr", start=1e-5, end=1e4, steps=30)
    curve = result["curves"][0]
    lrs = curve["lrs"]
    ratios = [b / a for a, b in itertools.pairwise(lrs)]
    assert lrs[0] == pytest.approx(1e-5) and ratios == pytest.approx([1e9 ** (1 / 29)] * len(ratios))
    assert curve["ended"] == "the loss blew up" and len(lrs) < 30  # an lr of 1e4 breaks any model
    assert len(curve["losses"]) == len(lrs) == len(curve["smoothed"]) and curve["lr_ratio"] == 10
    saved = json.loads((tmp_path / "lr" / "lr_find.json").read_text())
    assert saved["curves"][0]["lrs"] == lrs
    assert 'data-figure="lr-discriminative"' in (tmp_path / "lr" / "lr_find.html").read_text()


def test_cli_lr_find_prints_plots_and_a_table_and_refuses_a_used_out(tmp_path):
    root = labeled_folder(tmp_path / "data", per_class=4)
    args = (
        "lr-find",
        "--data",
        root,
        "--backbone",
        "squeezenet1_1",
        "--weights",
        "none",
        "--image-size",
        "32",
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--strategies",
        "freeze",
        "--steps",
        "12",
    )
    shown = catdog(*args, "--out", tmp_path / "one")
    assert shown.exit_code == 0, shown.output
    assert "suggested --lr" in shown.stdout and "┤" in shown.stdout and str(tmp_path / "one") in shown.stdout
    # its own header, not the training run's it is made of ("lr 1, 1 epoch")
    assert "catdog lr-find: squeezenet1_1, freeze" in shown.stderr and "lr 1," not in shown.stderr
    assert "the head's lr from 1e-7 to 10 over 12 steps, batch 4, 32 px" in shown.stderr
    result = ok_json(catdog(*args, "--out", tmp_path / "two", "--json"))
    assert result["kind"] == "lr_find" and result["curves"][0]["strategy"] == "freeze"
    again = catdog(*args, "--out", tmp_path / "one")
    assert again.exit_code == 1 and "already exists" in again.stderr
    assert "unknown strategy 'thaw'" in catdog(*args[:-4], "--strategies", "thaw", "--steps", "12").stderr


def test_a_suggested_lr_is_shown_as_one_would_type_it():
    from catdog_cli.cli.render import _lr

    assert [_lr(x) for x in (0.0003594, 0.00299, 0.5, 1e-7)] == ["3.6e-4", "3e-3", "0.5", "1e-7"]


def test_terminal_plot_marks_the_suggestion_and_spans_the_shown_lrs():
    from catdog_cli.cli.render import lr_plot

    lrs = [1e-7 * (1e8) ** (i / 99) for i in range(100)]
    losses = synthetic(lrs)
    smoothed = centred_average(losses)
    curve = {
        "strategy": "freeze",
        "lrs": lrs,
        "losses": losses,
        "smoothed": smoothed,
        "suggested_lr": 1e-3,
        "min_loss_lr": 1e-2,
        "lr_ratio": 10.0,
        "ended": "all 100 steps",
    }
    lines = lr_plot(curve, width=40, height=8).splitlines()
    rows = [line.split("┤", 1)[1] for line in lines if "┤" in line]
    assert len(rows) == 8 and all(len(r) == 40 for r in rows)
    bars = {r.index("|") for r in rows if "|" in r}
    assert len(bars) == 1 and 18 < bars.pop() < 32  # 1e-3: between 1e-7 and where the shown curve ends
    assert "•" in rows[0] and "•" in rows[-1]  # the highest and the lowest loss are drawn
    assert lines[-1].split() == ["1e-07", f"{lrs[max(i for i, s in enumerate(smoothed) if s <= 1.5)]:.0e}"]


def test_a_catdog_checkpoint_as_weights_is_a_warm_start_as_in_train(frozen_run, image_folder, tmp_path):
    """`lr-find --weights best.pt` (offered by the shared help) starts from the checkpoint as train does; a
    checkpoint of another backbone is refused before any folder is made."""
    best, root = frozen_run["out"] / "best.pt", image_folder(train=4, val=2)
    common = ("lr-find", "--data", root, "--weights", best, "--image-size", "32", "--device", "cpu")
    done = ok_json(
        catdog(
            *common,
            "--backbone",
            "resnet18",
            "--strategies",
            "freeze",
            "--steps",
            "12",
            "--out",
            tmp_path / "a",
            "--json",
        )
    )
    assert done["config"]["weights"] == str(best) and done["curves"][0]["strategy"] == "freeze"
    line = error_line(catdog(*common, "--backbone", "squeezenet1_1", "--out", tmp_path / "b"))
    assert line == f"error: {best} holds a resnet18 model, not squeezenet1_1: add --backbone resnet18 to train from it"
    assert not (tmp_path / "b").exists()


def test_one_lr_find_checks_its_options_and_resolves_its_data_once(tmp_path, monkeypatch):
    """The CLI's check_lr_find is handed on: find_lr checks nothing again, and the data folder is looked up once."""
    from catdog_cli.core import config as config_module
    from catdog_cli.data import dataset as dataset_module
    from catdog_cli.training import lr_find as lr_find_module

    checks, resolved, real_check, real_resolve = [], [], config_module.check_lr_find, config_module.resolve_data
    for module in (config_module, lr_find_module):
        monkeypatch.setattr(module, "check_lr_find", lambda *a: checks.append(a) or real_check(*a))
    for module in (config_module, dataset_module):
        monkeypatch.setattr(module, "resolve_data", lambda data: resolved.append(data) or real_resolve(data))
    root = labeled_folder(tmp_path / "data", per_class=4)
    args = ("--backbone", "squeezenet1_1", "--image-size", "32", "--batch-size", "4", "--device", "cpu")
    done = catdog("lr-find", "--data", root, "--weights", "none", "--steps", "12", *args, "--out", tmp_path / "lr")
    assert done.exit_code == 0, done.output
    assert (len(checks), resolved) == (1, [str(root)])
