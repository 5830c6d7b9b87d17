"""--log tensorboard: the event files in the run folder, read back with TensorBoard's own reader
(EventAccumulator): a train run's scalars and pictures, a compare grid's cells in the hparams view, lr-find's
curves (through the CLI)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY_CLI, Recorder, catdog, labeled_folder, ok_json
from PIL import Image

from catdog_cli.core.config import CompareConfig, TrainConfig
from catdog_cli.tracking.base import follow
from catdog_cli.tracking.tensorboard import cell_folder, confusion_image
from catdog_cli.training.compare import compare
from catdog_cli.training.loop import fit

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

TINY = {"backbone": "squeezenet1_1", "weights": "none", "image_size": 32, "batch_size": 4, "device": "cpu"}


def read(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def scalars(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, pytest.approx(e.value)) for e in events.Scalars(tag)]


def test_a_train_run_writes_its_scalars_and_pictures(tmp_path: Path) -> None:
    data = labeled_folder(tmp_path / "data")
    with follow(["tensorboard"], "train", Recorder()) as events:
        result = fit(TrainConfig(str(data), epochs=2, **TINY), tmp_path / "run", events)
        events.finish(result)
    board = read(tmp_path / "run" / "tensorboard")
    for key, tag in (("val_acc", "accuracy/val"), ("train_loss", "loss/train"), ("lr", "lr")):
        assert scalars(board, tag) == [(h["epoch"], h[key]) for h in result["history"]]
    assert set(board.Tags()["images"]) == {"confusion_matrix/val", "top_losses/val"}
    picture = Image.open(io.BytesIO(board.Images("confusion_matrix/val")[0].encoded_image_string))
    assert picture.size[0] == picture.size[1] > 2 * 48  # a square of 2 x 2 cells and their labels


def test_the_confusion_picture_is_darker_where_more_images_are() -> None:
    picture = confusion_image([[9, 0], [3, 6]], ["cat", "dog"], cell=48)
    label = 60
    darkest = picture[label + 40, label + 40]  # the 9 (a corner of its cell, away from the number)
    empty = picture[label + 40, label + 48 + 40]  # the 0
    assert darkest.sum() < empty.sum()


def test_a_compare_grid_has_a_row_per_cell_in_the_hparams_view(tmp_path: Path) -> None:
    data = labeled_folder(tmp_path / "data")
    strategies = ["freeze", "finetune"]
    config = CompareConfig(TrainConfig(str(data), epochs=1, **TINY), backbones=["squeezenet1_1"], strategies=strategies)
    with follow(["tensorboard"], "compare", Recorder()) as events:
        result = compare(config, tmp_path / "grid", events)
        events.finish(result)
    for row in result["rows"]:
        board = read(tmp_path / "grid" / "tensorboard" / cell_folder(row["backbone"], row["strategy"]))
        assert scalars(board, "accuracy/val") == [(h["epoch"], h["val_acc"]) for h in row["history"]]
        assert scalars(board, "hparam/best_val_acc") == [(0, row["best_val_acc"])]
        content = board.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        hparams = start.session_start_info.hparams
        assert (hparams["backbone"].string_value, hparams["strategy"].string_value) == (
            row["backbone"],
            row["strategy"],
        )


def test_lr_find_logs_its_curves_by_step(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = labeled_folder(tmp_path / "data")
    args = ("lr-find", "--data", data, *TINY_CLI, "--strategies", "freeze", "--steps", "12", "--batch-size", "4")
    result = ok_json(catdog(*args, "--log", "tensorboard", "--name", "first", "--json"))
    assert result["out"] == "runs/lr-find/first"
    (curve,) = result["curves"]
    board = read(Path(result["out"]) / "tensorboard")
    assert scalars(board, "lr_find/freeze/loss") == list(enumerate(curve["losses"]))
    assert scalars(board, "lr_find/freeze/lr") == list(enumerate(curve["lrs"]))


def test_under_torchrun_rank_0_alone_logs_every_cell(tmp_path: Path) -> None:
    """Two CPU processes (gloo) share a grid; the cell rank 1 trained reaches the log from compare.json's row."""
    data = labeled_folder(tmp_path / "data")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    # `--`: torchrun's own parser would take --log for a prefix of its --log-dir (README says so)
    command += ["-m", "catdog_cli", "--", "compare", "--data", str(data), "--backbones", "squeezenet1_1"]
    command += ["--strategies", "freeze,finetune", "--epochs", "1", "--weights", "none", "--image-size", "32"]
    command += ["--batch-size", "4", "--device", "cpu", "--workers", "1", "--out", str(tmp_path / "grid")]
    command += ["--log", "tensorboard"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "grid" / "compare.json").read_text())
    assert result["world_size"] == 2
    for row in result["rows"]:
        board = read(tmp_path / "grid" / "tensorboard" / cell_folder(row["backbone"], row["strategy"]))
        assert scalars(board, "hparam/best_val_acc") == [(0, row["best_val_acc"])]
    files = list((tmp_path / "grid" / "tensorboard").rglob("events.out.tfevents.*"))
    assert len({f.name.split(".")[-2] for f in files}) == 1  # one writing process (the name ends in .PID.N)
