"""compare: every strategy on every backbone, back to back, fairly, into one table.

Fair: one dataset split, images decoded once for the whole grid, and each backbone's cells start from one
model built once (pretrained weights read once, the head seeded) and copied per strategy. Cheap cells:
no per-cell checkpoint files, cuDNN autotuning shared by a backbone's cells, no host sync inside a step.
"""

from __future__ import annotations

import copy
import csv
import gc
import io
import json
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any

import torch

from catdog_cli.core.compare_rows import COMPARE_COLUMNS, interrupted_note, random_init_note, sort_rows
from catdog_cli.core.config import CompareConfig
from catdog_cli.core.events import Events
from catdog_cli.core.files import atomic_write_text
from catdog_cli.core.paths import run_folder
from catdog_cli.core.records import CompareResult, CompareRow, RunSummary, TrainResult, to_json
from catdog_cli.core.validate import Checked
from catdog_cli.core.world import World
from catdog_cli.data.dataset import Dataset, load_dataset
from catdog_cli.data.sources import DecodeCache
from catdog_cli.errors import OUT_OF_MEMORY, CatdogError, out_of_memory
from catdog_cli.models import checkpoints
from catdog_cli.models.transfer import TransferModel
from catdog_cli.models.warm_start import check_warm_start, initial_model, is_catdog_checkpoint
from catdog_cli.models.weights import read_state_dict
from catdog_cli.reporting.compare_report import write_compare_report
from catdog_cli.runtime import distributed
from catdog_cli.runtime.device import resolve_device
from catdog_cli.training.finish import fit_unknown_detector
from catdog_cli.training.loop import train_loop
from catdog_cli.training.setup import Run, run_summary, start_run

__all__ = ["CompareConfig", "compare"]

CONFIG_FILE = "compare-config.json"


def cell_name(backbone: str, strategy: str) -> str:
    return f"{backbone.replace(':', '_')}-{strategy}"


def _earlier_compare(out: Path, config: CompareConfig) -> bool:
    """Whether OUT holds an earlier compare made with the same settings (its finished cells then count)."""
    saved = out / CONFIG_FILE
    if not os.path.isfile(saved):  # False, not PermissionError, inside a folder that cannot be read
        return False
    try:
        settings = json.loads(saved.read_text())
    except (OSError, ValueError):  # cut short or edited; UnicodeDecodeError is a ValueError
        raise CatdogError(f"{saved} is unreadable or corrupt; pick a new --out") from None
    if settings != json.loads(to_json(config.settings())):
        raise CatdogError(f"{out} holds a compare with other settings; pick a new --out")
    return True


@contextmanager
def compare_folder(out: Path | str | None, config: CompareConfig, name: str | None = None) -> Iterator[Path]:
    """A new or empty folder, or an earlier compare's folder made with the same settings, claimed for this run."""
    reuse = out is not None and _earlier_compare(Path(out), config)
    with run_folder(out, "compare", reuse=reuse, name=name) as folder:
        yield folder


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, Real) and not isinstance(value, bool))


def read_row(path: Path, events: Events) -> CompareRow | None:
    """A finished cell's row (cell.json), or None when there is none. A file cut short or edited into something
    else is said and ignored: that cell trains again and its file is written anew."""
    if not path.exists():
        return None
    try:
        row = json.loads(path.read_text())
        valid = (
            isinstance(row, dict)
            and CompareRow.__required_keys__ <= set(row)
            and row["status"] in ("ok", "failed")
            and isinstance(row["history"], list)
            and all(_is_number(row[c.key]) for c in COMPARE_COLUMNS if c.kind != "text")
        )
    except (OSError, ValueError):
        valid = False
    if not valid:
        events.note(f"{path} is unreadable or corrupt: that cell runs again")
        return None
    return row


def failures(result: CompareResult) -> list[str]:
    """The failed cells, one line each: "backbone / strategy: reason"."""
    return [f"{r['backbone']} / {r['strategy']}: {r['error']}" for r in result["rows"] if r["status"] != "ok"]


def row_from(result: TrainResult, backbone: str, strategy: str) -> CompareRow:
    history = result["history"]
    best = next((h for h in history if h["epoch"] == result["best_epoch"]), None)
    seconds = sum(h["seconds"] for h in history)
    return {
        "backbone": backbone,
        "strategy": strategy,
        "status": "ok",
        "error": None,
        "params_total": result["params"]["total"],
        "params_trainable": result["params"]["trainable"],
        "best_val_acc": result["best_val_acc"],
        "best_epoch": result["best_epoch"],
        "val_loss": best["val_loss"] if best else None,
        "test_acc": result["test"]["accuracy"] if "test" in result else None,
        "train_seconds": seconds,
        "images_per_sec": sum(h["images_per_sec"] * h["seconds"] for h in history) / seconds if seconds else None,
        "history": [{k: h[k] for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")} for h in history],
    }


def failed_row(backbone: str, strategy: str, reason: str) -> CompareRow:
    return {
        "backbone": backbone,
        "strategy": strategy,
        "status": "failed",
        "error": reason,
        "params_total": None,
        "params_trainable": None,
        "best_val_acc": None,
        "best_epoch": None,
        "val_loss": None,
        "test_acc": None,
        "train_seconds": None,
        "images_per_sec": None,
        "history": [],
    }


@dataclass
class Grid:
    """One process's share of the grid and what it has found so far."""

    config: CompareConfig
    dataset: Dataset
    device: torch.device
    out: Path
    events: Events
    keep_best: bool = False
    rows: list[CompareRow] = field(default_factory=list)
    best: BestCell | None = None  # this process's best new cell, for --keep-best
    interrupted: bool = False


@dataclass
class BestCell:
    """--keep-best's weights, in host memory: a finished cell holds nothing on the GPU while the grid goes on."""

    val_acc: float
    meta: dict[str, Any]
    state: dict[str, torch.Tensor]
    ood: dict[str, Any] | None  # the unknown-image detector's checkpoint entry (CPU tensors), None with --ood none

    @classmethod
    def of(cls, run: Run, val_acc: float) -> BestCell:
        """Fitted while the cell's run is alive (it goes when the cell ends): the detector of each cell that
        becomes this rank's best, not only the grid's winner's."""
        detector = fit_unknown_detector(run)
        meta = {**run.meta(), "state": asdict(run.state)}
        return cls(val_acc, meta, checkpoints.cpu_state(run.model), detector and detector.checkpoint_entry())


class Backbones:
    """Each backbone built once (pretrained weights read once, head seeded) and copied for each of its cells."""

    def __init__(self, config: CompareConfig, classes: list[str], device: torch.device, events: Events):
        self.config, self.classes, self.device, self.events = config, classes, device, events
        self.name: str | None = None
        self.model: TransferModel | None = None

    def copy(self, backbone: str) -> TransferModel:
        if self.name != backbone:
            self.name, self.model = None, None  # free the last backbone before building the next
            weights, seed = self.config.weights_for(backbone), self.config.train.seed
            self.model = initial_model(backbone, self.classes, weights, self.device, seed, self.events)
            self.name = backbone
        return copy.deepcopy(self.model)


def train_cell(
    grid: Grid, backbones: Backbones, cache: DecodeCache, backbone: str, strategy: str
) -> tuple[Run, TrainResult]:
    cell = grid.config.cell(backbone, strategy, str(grid.device))
    run = start_run(cell, grid.dataset, grid.events, cache, backbones.copy(backbone), world=World())
    cell_dir = grid.out / "cells" / cell_name(backbone, strategy)
    cell_dir.mkdir(parents=True, exist_ok=True)
    # the row's val numbers come from the history; only the test split needs the best weights again
    return run, train_loop(run, cell_dir, grid.events, save_checkpoints=False, final_splits=("test",))


def attempt_cell(
    grid: Grid, backbones: Backbones, cache: DecodeCache, backbone: str, strategy: str
) -> tuple[TrainResult | None, str]:
    """A cell's result, or the reason it failed: catdog's own errors and running out of memory (torch's
    OutOfMemoryError, cuDNN/cuBLAS allocation failures, an OOM inside torch.compile) fail the cell; any other
    error is a bug and surfaces. The cell's run (model, optimizer moments, EMA, cached features) and a failure's
    traceback go when this returns; the best weights for --keep-best are copied to the CPU first."""
    try:
        run, result = train_cell(grid, backbones, cache, backbone, strategy)
    except Exception as exc:
        if not (isinstance(exc, CatdogError) or out_of_memory(exc)):
            raise
        return None, OUT_OF_MEMORY if out_of_memory(exc) else str(exc)
    best = result["best_val_acc"]
    if grid.keep_best and not result["interrupted"] and (grid.best is None or best > grid.best.val_acc):
        grid.best = None  # the last best's copy goes before the new one is made
        grid.best = BestCell.of(run, best)  # train_loop left the best weights loaded
    return result, ""


def release_memory() -> None:
    """What a finished cell held, given back before the next cell builds: reference cycles collected, then the
    CUDA allocator's cached blocks returned (a no-op where CUDA was never used)."""
    gc.collect()
    torch.cuda.empty_cache()


def run_cells(grid: Grid, cells: list[tuple[int, tuple[str, str]]], total: int) -> None:
    """Train each (backbone, strategy) cell; a failed cell is recorded with its reason and the grid goes on."""
    cache, backbones = DecodeCache(), Backbones(grid.config, grid.dataset.classes, grid.device, grid.events)
    for index, (backbone, strategy) in cells:
        cell_json = grid.out / "cells" / cell_name(backbone, strategy) / "cell.json"
        grid.events.cell(index, total, f"{backbone} / {strategy}")
        finished = read_row(cell_json, grid.events)
        if finished is not None:
            grid.rows.append(finished)
            continue
        start = time.perf_counter()
        result, reason = attempt_cell(grid, backbones, cache, backbone, strategy)
        release_memory()
        if result is None:
            grid.rows.append(failed_row(backbone, strategy, reason))
            grid.events.note(f"{backbone} / {strategy} failed: {reason}")
            continue
        if result["interrupted"]:
            grid.interrupted = True
            return
        row = row_from(result, backbone, strategy) | {"cell_seconds": time.perf_counter() - start}
        grid.rows.append(row)
        grid.events.cell_done(row)
        atomic_write_text(cell_json, to_json(row, indent=None))


def compare(
    config: CompareConfig | Checked[CompareConfig],
    out: Path | str | None = None,
    events: Events | None = None,
    keep_best: bool = False,
    name: str | None = None,
) -> CompareResult:
    """Run the grid; finished cells of an earlier run into the same OUT are read back, not retrained. Without
    `out`, the grid goes to runs/compareN, or runs/compare/NAME with a `name`. `config` is checked here, unless it
    comes checked (`config.check()`: the CLI checks before torch loads).

    Under torchrun the cells are dealt round-robin to the ranks, each training its cells on its own device;
    rank 0 gathers the rows and writes the outputs.
    """
    world = distributed.init()
    events = events if events is not None and world.main else Events()
    checked = config if isinstance(config, Checked) else config.check()
    config = checked.given
    device = resolve_device(distributed.device_for(config.train.device, world))
    for backbone in config.backbones:  # a file no cell could use: refused once, up front
        weights = config.weights_for(backbone)
        check_warm_start(weights, backbone)  # a catdog checkpoint: a warm start, as in train
        if weights not in ("default", "none") and not is_catdog_checkpoint(weights):
            read_state_dict(Path(weights))
    with ExitStack() as stack:  # the folder is claimed before any work, and held until the grid is done
        folder = distributed.main_enters(stack, lambda: compare_folder(out, config, name), world)
        train = config.train
        dataset = load_dataset(train.data, train.val_split, train.seed, root=checked.data)
        if world.main and not (folder / CONFIG_FILE).exists():
            atomic_write_text(folder / CONFIG_FILE, to_json(config.settings()))
        events.summary(grid_summary(config, dataset, device, folder))
        return _run_grid(config, dataset, device, folder, events, keep_best, world)


def _run_grid(
    config: CompareConfig,
    dataset: Dataset,
    device: torch.device,
    out: Path,
    events: Events,
    keep_best: bool,
    world: World,
) -> CompareResult:
    finished = [read_row(p, Events()) for p in sorted(out.glob("cells/*/cell.json"))]
    earlier_best = max((r["best_val_acc"] or 0.0 for r in finished if r), default=-1.0)
    cells = list(enumerate((b, s) for b in config.backbones for s in config.strategies))
    grid = Grid(config, dataset, device, out, events, keep_best)
    patience = distributed.patient_group(world)  # made by every rank together, before the uneven work
    start = time.perf_counter()
    try:
        run_cells(grid, cells[world.rank :: world.size], len(cells))
    except KeyboardInterrupt:  # between cells: stop, and report what finished
        grid.interrupted = True
    # the ranks meet here after uneven work (one rank's cells can take hours longer): over a patient gloo group
    rows = [row for part in distributed.gather(grid.rows, world, patience) for row in part]
    new_best = distributed.gather(grid.best.val_acc if grid.best else -1.0, world, patience)
    winner = max(range(len(new_best)), key=new_best.__getitem__)
    if keep_best and new_best[winner] > earlier_best and world.rank == winner:
        checkpoints.save_state(out / "best.pt", grid.best.state, grid.best.meta)
        if grid.best.ood is not None:  # the winner's best.pt has a detector, as a train run's has
            checkpoints.update(out / "best.pt", ood=grid.best.ood)
    result: CompareResult = {
        "kind": "compare",
        "config": config.to_dict(),
        "device": str(device),
        "world_size": world.size,
        "classes": dataset.classes,
        "split_origin": dataset.origin,
        "versions": checkpoints.versions(),
        "out": str(out),
        "interrupted": any(distributed.gather(grid.interrupted, world, patience)),
        "wall_seconds": time.perf_counter() - start,
        "best": str(out / "best.pt") if keep_best and (out / "best.pt").exists() else None,
        "rows": sort_rows(rows),
        "weights": {b: config.weights_for(b) for b in config.backbones},
    }
    if world.main:
        write_outputs(out, result)
    return result


def grid_summary(config: CompareConfig, dataset: Dataset, device: torch.device, out: Path) -> RunSummary:
    """The summary before a grid: a cell's, with every backbone and strategy and each backbone's weights."""
    return {
        **run_summary(config.train, dataset, device, out),
        "kind": "compare",
        "backbones": config.backbones,
        "strategies": config.strategies,
        "weights": {b: config.weights_for(b) for b in config.backbones},
    }


def write_outputs(out: Path, result: CompareResult) -> None:
    """compare.json (everything), compare.csv and compare.md (the table), report.html."""
    atomic_write_text(out / "compare.json", to_json(result))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([c.key for c in COMPARE_COLUMNS])
    for row in result["rows"]:
        writer.writerow(["" if row[c.key] is None else row[c.key] for c in COMPARE_COLUMNS])
    atomic_write_text(out / "compare.csv", buffer.getvalue())
    lines = ["| " + " | ".join(c.title for c in COMPARE_COLUMNS) + " |", "|" + "---|" * len(COMPARE_COLUMNS)]
    for row in result["rows"]:
        lines.append("| " + " | ".join(c.format(row[c.key]) for c in COMPARE_COLUMNS) + " |")
    note = interrupted_note(result)
    md = (f"**{note}**\n\n" if note else "") + f"Accuracies are on the val split ({result['split_origin']}).\n\n"
    md += "\n".join(lines) + "\n"
    if random := random_init_note(result):
        md += f"\n**{random}**\n"
    atomic_write_text(out / "compare.md", md)
    write_compare_report(result, out / "report.html")
