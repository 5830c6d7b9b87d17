"""compare: the grid runs once per cell, fails per cell, resumes, and writes its table three ways."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import weakref
from pathlib import Path

import pytest
import torch
from helpers import Recorder, catdog, error_line, ok_json, out_of_memory
from PIL import Image
from rich.console import Console

from catdog_cli.cli.compare_table import compare_table
from catdog_cli.core.compare_rows import random_init_note
from catdog_cli.core.config import CompareConfig, TrainConfig
from catdog_cli.errors import OUT_OF_MEMORY, CatdogError
from catdog_cli.models.backbones import TORCHVISION
from catdog_cli.training import compare as compare_mod
from catdog_cli.training.compare import compare

STRATEGIES = ["finetune", "freeze", "discriminative"]
ROW_FIELDS = {
    "backbone",
    "strategy",
    "status",
    "error",
    "params_total",
    "params_trainable",
    "best_val_acc",
    "best_epoch",
    "val_loss",
    "test_acc",
    "train_seconds",
    "cell_seconds",
    "images_per_sec",
    "history",
}


@pytest.fixture(scope="module")
def colors(tmp_path_factory) -> Path:
    """Two classes told apart by color, with train/val/test folders (so test accuracy is reported)."""
    root = tmp_path_factory.mktemp("colors")
    rng = random.Random(0)
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        for name, base in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                color = tuple(min(255, max(0, c + rng.randint(-30, 30))) for c in base)
                Image.new("RGB", rng.choice([(40, 30), (30, 40)]), color).save(folder / f"{i}.png")
    return root


def small_grid(data: Path, backbones=("resnet18", "squeezenet1_1"), strategies=STRATEGIES, **train) -> CompareConfig:
    settings = dict(epochs=1, batch_size=8, image_size=32, weights="none", device="cpu", workers=1)
    return CompareConfig(
        TrainConfig(str(data), **(settings | train)), backbones=list(backbones), strategies=list(strategies)
    )


@pytest.fixture(scope="module")
def grid(colors, tmp_path_factory):
    out = tmp_path_factory.mktemp("grid") / "cmp"
    events = Recorder()
    result = compare(small_grid(colors), out, events, keep_best=True)
    return result, out, events


def test_every_cell_runs_once_with_the_full_row(grid):
    result, _, events = grid
    assert len(result["rows"]) == 6
    assert {(r["backbone"], r["strategy"]) for r in result["rows"]} == {
        (b, s) for b in ("resnet18", "squeezenet1_1") for s in STRATEGIES
    }
    assert len(events.epochs) == 6 and len(events.cells) == 6
    for row in result["rows"]:
        assert set(row) == ROW_FIELDS
        assert row["status"] == "ok" and row["best_val_acc"] == max(h["val_acc"] for h in row["history"])
        assert (row["best_val_acc"] * 8).is_integer()  # k of the 8 val images
        assert row["test_acc"] is not None  # the data has a labeled test split
        assert len(row["history"]) == 1


def test_freeze_trains_far_fewer_parameters(grid):
    rows = {(r["backbone"], r["strategy"]): r for r in grid[0]["rows"]}
    for backbone in ("resnet18", "squeezenet1_1"):
        freeze, finetune = rows[backbone, "freeze"], rows[backbone, "finetune"]
        assert freeze["params_total"] == finetune["params_total"]
        assert freeze["params_trainable"] * 100 < finetune["params_trainable"]
        assert rows[backbone, "discriminative"]["params_trainable"] == finetune["params_trainable"]


def test_rows_sorted_by_val_accuracy(grid):
    accs = [r["best_val_acc"] for r in grid[0]["rows"]]
    assert accs == sorted(accs, reverse=True)


def test_outputs_json_csv_md_and_best_checkpoint(grid):
    result, out, _ = grid
    assert json.loads((out / "compare.json").read_text())["rows"] == result["rows"]
    with open(out / "compare.csv") as f:
        table = list(csv.DictReader(f))
    assert [(r["backbone"], r["strategy"]) for r in table] == [(r["backbone"], r["strategy"]) for r in result["rows"]]
    md = (out / "compare.md").read_text()
    assert "val split" in md and md.count("\n| ") == 7  # header + 6 rows
    assert len(list(out.glob("cells/*/metrics.csv"))) == 6
    assert result["best"] == str(out / "best.pt") and (out / "best.pt").is_file()
    assert not list(out.glob("cells/*/*.pt"))  # cells write no checkpoints


def test_best_checkpoint_is_usable_by_evaluate(grid, colors):
    from catdog_cli.inference.evaluate import evaluate_checkpoint

    result, out, _ = grid
    ev = evaluate_checkpoint(out / "best.pt", str(colors), "val", device="cpu", workers=1)
    assert ev["accuracy"] == pytest.approx(result["rows"][0]["best_val_acc"])


def test_rerun_with_same_out_does_no_training(grid, colors, monkeypatch):
    result, out, _ = grid

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(compare_mod, "train_loop", no_training)
    monkeypatch.setattr(compare_mod, "initial_model", no_training)
    again = compare(small_grid(colors), out, Recorder(), keep_best=True)
    assert [r["best_val_acc"] for r in again["rows"]] == [r["best_val_acc"] for r in result["rows"]]


def test_other_settings_in_same_out_are_refused(grid, colors):
    with pytest.raises(CatdogError, match="other settings"):
        compare(small_grid(colors, epochs=2), grid[1])


def test_failing_cell_is_recorded_and_the_grid_goes_on(colors, tmp_path, monkeypatch):
    real = compare_mod.initial_model

    def flaky(name, *args, **kwargs):
        if name == "squeezenet1_1":
            raise out_of_memory()
        return real(name, *args, **kwargs)

    monkeypatch.setattr(compare_mod, "initial_model", flaky)
    result = compare(small_grid(colors, strategies=["freeze", "finetune"]), tmp_path / "cmp")
    status = {(r["backbone"], r["strategy"]): r for r in result["rows"]}
    assert status["resnet18", "freeze"]["status"] == status["resnet18", "finetune"]["status"] == "ok"
    failed = status["squeezenet1_1", "freeze"]
    assert failed["status"] == "failed" and failed["error"] == OUT_OF_MEMORY
    assert [r["status"] for r in result["rows"]] == ["ok", "ok", "failed", "failed"]  # failures last


def test_a_bug_in_a_cell_is_not_taken_for_a_failed_cell(colors, tmp_path, monkeypatch):
    """Only catdog's own errors and out of memory are a cell's failure; anything else is a bug and surfaces."""

    def broken(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(compare_mod, "initial_model", broken)
    with pytest.raises(ValueError, match="a bug"):
        compare(small_grid(colors, strategies=["freeze"]), tmp_path / "cmp")


def test_unknown_strategy_is_refused_before_work(colors, tmp_path):
    with pytest.raises(CatdogError, match="unknown strategy"):
        compare(small_grid(colors, strategies=["finetune", "bogus"]), tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()


# --- exit codes, an interrupted grid, corrupt files in OUT --------------------------------------------------


def _grid_args(colors: Path, out: Path, backbones: str = "squeezenet1_1") -> list:
    return [
        "compare",
        "--data",
        colors,
        "--backbones",
        backbones,
        "--strategies",
        "freeze,finetune",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--image-size",
        "32",
        "--weights",
        "none",
        "--device",
        "cpu",
        "--workers",
        "1",
        "--out",
        out,
    ]


def _fail(cells: set[tuple[str, str]]):
    real = compare_mod.train_cell

    def train_cell(grid, backbones, cache, backbone, strategy):
        if (backbone, strategy) in cells:
            raise CatdogError(f"{backbone} cannot be built here")
        return real(grid, backbones, cache, backbone, strategy)

    return train_cell


@pytest.mark.parametrize(
    "failing",
    [set(), {("squeezenet1_1", "freeze")}, {("squeezenet1_1", "freeze"), ("squeezenet1_1", "finetune")}],
    ids=["none", "some", "all"],
)
def test_compare_exit_code_says_whether_the_grid_worked(colors, tmp_path, monkeypatch, failing):
    monkeypatch.setattr(compare_mod, "train_cell", _fail(failing))
    result = catdog(*_grid_args(colors, tmp_path / "cmp"), "--json")
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())  # written whatever happened
    assert {(r["backbone"], r["strategy"]) for r in saved["rows"] if r["status"] == "failed"} == failing
    failed_lines = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    if len(failing) == 2:
        assert result.exit_code == 1 and result.stdout == ""
        assert result.stderr.strip().splitlines()[-1] == (
            "error: every cell of the grid failed (2); squeezenet1_1 / freeze: squeezenet1_1 cannot be built here; "
            f"see {tmp_path / 'cmp'}/compare.json"
        )
    else:
        assert result.exit_code == 0 and json.loads(result.stdout)["rows"] == saved["rows"]
        assert failed_lines == [f"failed: {b} / {s}: {b} cannot be built here" for b, s in sorted(failing)]


@pytest.mark.parametrize("after", [0, 1], ids=["before any cell", "after one cell"])
def test_an_interrupted_compare_exits_130_and_says_so_everywhere(colors, tmp_path, monkeypatch, after):
    real, started = compare_mod.train_cell, []

    def interrupted(*args):
        started.append(args[-2:])
        if len(started) > after:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(compare_mod, "train_cell", interrupted)
    out = tmp_path / "cmp"
    result = catdog(*_grid_args(colors, out))
    assert result.exit_code == 130
    note = f"interrupted: {after} of 2 cells finished; the same command with the same --out finishes the grid"
    assert note in " ".join(result.stdout.split()) and note in result.stderr
    assert json.loads((out / "compare.json").read_text())["interrupted"] is True
    assert note in (out / "compare.md").read_text() and note in (out / "report.html").read_text()

    monkeypatch.setattr(compare_mod, "train_cell", real)  # the same command again finishes the grid
    done = catdog(*_grid_args(colors, out), "--json")
    assert done.exit_code == 0 and len(json.loads(done.stdout)["rows"]) == 2


CORRUPT = {
    "empty": b"",
    "cut short": b'{"backbone": "squeezenet1_1", "strat',
    "not UTF-8": b"\xff\xfe{}",
    "a list": b"[1, 2]",
    "null": b"null",
    "wrong types": None,
}


@pytest.mark.parametrize("kind", CORRUPT)
def test_a_corrupt_cell_file_is_said_and_that_cell_runs_again(grid, colors, tmp_path, monkeypatch, kind):
    _, out, _ = grid
    copy = tmp_path / "cmp"
    shutil.copytree(out, copy)
    cell = copy / "cells" / "resnet18-freeze" / "cell.json"
    if CORRUPT[kind] is None:
        cell.write_text(json.dumps({**json.loads(cell.read_text()), "best_val_acc": "high", "status": "great"}))
    else:
        cell.write_bytes(CORRUPT[kind])
    trained = []
    monkeypatch.setattr(
        compare_mod,
        "train_cell",
        lambda grid, b, c, backbone, strategy: (
            trained.append((backbone, strategy)) or (_ for _ in ()).throw(CatdogError("stopped here"))
        ),
    )
    events = Recorder()
    result = compare(small_grid(colors), copy, events)
    assert trained == [("resnet18", "freeze")]  # only the corrupt cell, every other one read back
    assert f"{cell} is unreadable or corrupt: that cell runs again" in events.notes
    assert len(result["rows"]) == 6


@pytest.mark.parametrize("kind", [k for k, v in CORRUPT.items() if v is not None])
def test_a_corrupt_compare_config_is_one_line(colors, tmp_path, kind):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / compare_mod.CONFIG_FILE).write_bytes(CORRUPT[kind])
    result = catdog(*_grid_args(colors, out))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() in (
        [f"error: {out / compare_mod.CONFIG_FILE} is unreadable or corrupt; pick a new --out"],
        [f"error: {out} holds a compare with other settings; pick a new --out"],
    )
    assert os.listdir(out) == [compare_mod.CONFIG_FILE]


def test_compare_out_that_is_a_file_is_one_line(colors, tmp_path):
    out = tmp_path / "cmp"
    out.write_text("the user's")
    result = catdog(*_grid_args(colors, out))
    assert result.stderr.strip().splitlines() == [f"error: {out} is a file, not a folder; pick a new --out"]
    assert out.read_text() == "the user's"


def test_freeze_unfreeze_and_recipe_options_in_a_grid(colors, tmp_path):
    config = small_grid(
        colors, backbones=("resnet18",), strategies=["freeze-unfreeze"], epochs=2, label_smoothing=0.1, ema=True
    )
    result = compare(config, tmp_path / "cmp", Recorder())
    assert [(r["strategy"], r["status"]) for r in result["rows"]] == [("freeze-unfreeze", "ok")]
    assert result["config"]["label_smoothing"] == 0.1 and result["config"]["ema"] is True
    saved = json.loads((tmp_path / "cmp" / "compare-config.json").read_text())
    assert saved["label_smoothing"] == 0.1 and "mixup" not in saved  # options at their defaults are not settings


def test_offline_grid_takes_each_backbones_weights_from_a_folder(colors, tmp_path):
    """Two backbones, each its own weights file, found by name in one folder; the summary before the cells, and
    off a terminal a line per cell and the whole table."""
    folder = tmp_path / "weights"
    folder.mkdir()
    for name, file in (("resnet18", "resnet18-f37072fd.pth"), ("squeezenet1_1", "squeezenet1_1.pth")):
        with torch.random.fork_rng():
            torch.manual_seed(1)
            torch.save(TORCHVISION[name].build_full().state_dict(), folder / file)
    result = catdog(
        "compare",
        "--data",
        colors,
        "--backbones",
        "resnet18,squeezenet1_1",
        "--strategies",
        "freeze",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--image-size",
        "32",
        "--device",
        "cpu",
        "--workers",
        "1",
        "--weights",
        folder,
        "--out",
        tmp_path / "cmp",
    )
    assert result.exit_code == 0, result.output
    summary = result.stderr.index("catdog compare: 2 backbones x 1 strategies = 2 cells")
    assert summary < result.stderr.index("cell 1/2: resnet18 / freeze")
    assert f"resnet18: weights from {folder / 'resnet18-f37072fd.pth'}" in result.stderr
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    header = next(line for line in result.stdout.splitlines() if "backbone" in line)
    assert header.split()[-2:] == ["params", "img/s"]  # off a terminal the table is whole


def test_one_weights_file_for_several_backbones_is_refused_before_work(colors, tmp_path):
    weights = tmp_path / "r18.pth"
    weights.write_bytes(b"")
    result = catdog("compare", "--data", colors, "--backbones", "fast", "--weights", weights, "--out", tmp_path / "cmp")
    assert "one file, which fits one architecture" in error_line(result)
    assert not (tmp_path / "cmp").exists()


def test_a_catdog_checkpoint_as_weights_is_a_warm_start_as_in_train(colors, frozen_run, tmp_path):
    """`--weights best.pt` is offered by compare's help as by train's: the checkpoint's backbone carries over (its
    classes differ here, so the head is new), instead of '0 missing and 2 unexpected keys'."""
    best = frozen_run["out"] / "best.pt"
    args = [a if a != "squeezenet1_1" else "resnet18" for a in _grid_args(colors, tmp_path / "cmp")]
    args[args.index("--weights") + 1] = best
    result = ok_json(catdog(*args, "--strategies", "freeze", "--json"))
    assert [(r["backbone"], r["status"]) for r in result["rows"]] == [("resnet18", "ok")]

    other = tmp_path / "other"
    line = error_line(catdog(*_grid_args(colors, other), "--weights", best))  # a squeezenet1_1 grid
    assert line == f"error: {best} holds a resnet18 model, not squeezenet1_1: add --backbone resnet18 to train from it"
    assert not other.exists()  # refused before any work


def test_each_cell_lets_go_of_its_run_and_keep_best_holds_cpu_weights(colors, tmp_path, monkeypatch):
    """A finished cell's model (and optimizer moments, EMA, features) is gone before the next cell builds:
    on a GPU it would take the next cell's headroom. --keep-best holds a state dict in host memory, no Run."""
    real, models, alive_at_start = compare_mod.start_run, [], []

    def watched(*args, **kwargs):
        alive_at_start.append([ref() is not None for ref in models])
        run = real(*args, **kwargs)
        models.append(weakref.ref(run.model))
        return run

    monkeypatch.setattr(compare_mod, "start_run", watched)
    kept = []
    real_save = compare_mod.checkpoints.save_state
    monkeypatch.setattr(
        compare_mod.checkpoints,
        "save_state",
        lambda path, state, meta: kept.append(state) or real_save(path, state, meta),
    )
    result = compare(small_grid(colors, strategies=["finetune", "freeze"]), tmp_path / "cmp", keep_best=True)
    assert len(models) == 4 and alive_at_start == [[], [False], [False, False], [False, False, False]]
    assert all(ref() is None for ref in models)
    assert len(kept) == 1 and all(t.device.type == "cpu" for t in kept[0].values())
    assert result["best"] == str(tmp_path / "cmp" / "best.pt")


@pytest.mark.parametrize(
    "error",
    [
        "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
        "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "compiled",  # torch.compile's BackendCompilerFailed, raised from the OutOfMemoryError its graph hit
    ],
    ids=["cudnn", "cublas", "compile-wrapped"],
)
def test_allocation_failures_fail_their_cell_freed_and_the_grid_goes_on(colors, tmp_path, monkeypatch, error):
    real, failed_models, freed_at_empty_cache = compare_mod.initial_model, [], []

    def failing(name, *args, **kwargs):
        model = real(name, *args, **kwargs)
        if name != "squeezenet1_1":
            return model
        failed_models.append(weakref.ref(model))
        if error != "compiled":
            raise RuntimeError(error)
        try:
            raise out_of_memory()
        except torch.cuda.OutOfMemoryError as oom:
            raise RuntimeError("backend='inductor' raised: see above") from oom

    monkeypatch.setattr(compare_mod, "initial_model", failing)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed_at_empty_cache.append([r() for r in failed_models]))
    result = compare(small_grid(colors, strategies=["freeze"]), tmp_path / "cmp")
    rows = {r["backbone"]: r for r in result["rows"]}
    assert rows["resnet18"]["status"] == "ok"
    assert rows["squeezenet1_1"]["status"] == "failed" and rows["squeezenet1_1"]["error"] == OUT_OF_MEMORY
    # the cache is emptied after the failed cell's tensors are gone (not inside `except`, traceback alive)
    assert freed_at_empty_cache and freed_at_empty_cache[-1] == [None]


def test_cells_from_random_init_are_marked_in_the_table_md_and_report(grid):
    """Random-init cells sit at the majority class; unmarked, they read as a verdict on the architecture."""
    result, out, _ = grid
    assert result["weights"] == {"resnet18": "none", "squeezenet1_1": "none"}
    note = "random init (--weights none), no ImageNet weights: resnet18, squeezenet1_1; on a small dataset"
    assert note in (out / "compare.md").read_text()
    assert note in (out / "report.html").read_text()
    console = Console(file=io.StringIO(), width=200)
    console.print(compare_table(result))
    assert note in console.file.getvalue()
    assert random_init_note({**result, "weights": {"resnet18": "default"}}) is None


def test_a_grid_checks_its_options_and_finds_its_data_once(colors, tmp_path, monkeypatch):
    """The grid is checked once, up front (each strategy's settings, the data folder once); no cell checks again."""
    from catdog_cli.core import config as config_module
    from catdog_cli.data import dataset as dataset_module

    resolved, settings, real_resolve, real_settings = [], [], config_module.resolve_data, TrainConfig.check_settings
    for module in (config_module, dataset_module):
        monkeypatch.setattr(module, "resolve_data", lambda data: resolved.append(data) or real_resolve(data))
    monkeypatch.setattr(
        TrainConfig, "check_settings", lambda c, weights=True: settings.append(c.strategy) or real_settings(c, weights)
    )
    result = compare(small_grid(colors, ("squeezenet1_1",), ["freeze", "finetune"], ood="none"), tmp_path / "cmp")
    assert [r["status"] for r in result["rows"]] == ["ok", "ok"]
    assert (resolved, settings) == ([str(colors)], ["freeze", "finetune"])
