"""compare: every strategy on every backbone, back to back, fairly, into one table.

Fair: one dataset split, images decoded once for the whole grid, and each backbone's cells start from one
model built once (pretrained weights read once, the head seeded) and copied per strategy. Cheap cells:
no per-cell checkpoint files, cuDNN autotuning shared by a backbone's cells, no host sync inside a step.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from catdog_cli import checkpoints, distributed, formatting, report
from catdog_cli.backbones import SEED_BACKBONES, build_model
from catdog_cli.data import load_dataset
from catdog_cli.distributed import World
from catdog_cli.engine import Events, Run, TrainConfig, resolve_device, start_run, train_loop
from catdog_cli.errors import OUT_OF_MEMORY, CatdogError
from catdog_cli.paths import atomic_write_text, new_run_dir
from catdog_cli.pipeline import DecodeCache
from catdog_cli.strategies import STRATEGIES

CONFIG_FILE = "compare-config.json"


@dataclass
class CompareConfig:
    data: str
    backbones: list[str] = field(default_factory=lambda: list(SEED_BACKBONES))
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    epochs: int = 3
    batch_size: int | None = None
    lr: float | None = None
    lr_ratio: float = 10.0
    image_size: int | None = None
    weights: str = "default"
    device: str = "auto"
    seed: int = 0
    val_split: float = 0.2
    cache_gib: float | None = None
    workers: int | None = None

    def cell_config(self, backbone: str, strategy: str, device: str) -> TrainConfig:
        return TrainConfig(self.data, backbone, strategy, self.epochs, self.batch_size, self.lr, self.lr_ratio,
                           self.image_size, self.weights, device, self.seed, self.val_split,
                           cache_gib=self.cache_gib, workers=self.workers)

    def settings(self) -> dict[str, Any]:
        """What must match for an earlier OUT's finished cells to count (the grid itself may grow)."""
        return {k: v for k, v in asdict(self).items() if k not in ("backbones", "strategies", "device", "workers")}


def cell_name(backbone: str, strategy: str) -> str:
    return f"{backbone.replace(':', '_')}-{strategy}"


def claim_compare_dir(out: Path | str | None, config: CompareConfig) -> Path:
    """A new folder, or an earlier compare's folder made with the same settings (its finished cells count)."""
    if out is None:
        out = new_run_dir("runs", "compare")
    out = Path(out)
    saved = out / CONFIG_FILE
    if saved.exists():
        if json.loads(saved.read_text()) != json.loads(json.dumps(config.settings())):
            raise CatdogError(f"{out} holds a compare with other settings; pick a new --out")
        return out
    if out.exists() and any(out.iterdir()):
        raise CatdogError(f"{out} already exists and is not a compare folder; catdog never overwrites (new --out)")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, json.dumps(config.settings(), indent=2))
    return out


def row_from(result: dict[str, Any], backbone: str, strategy: str) -> dict[str, Any]:
    history = result["history"]
    best = next((h for h in history if h["epoch"] == result["best_epoch"]), None)
    seconds = sum(h["seconds"] for h in history)
    return {
        "backbone": backbone, "strategy": strategy, "status": "ok", "error": None,
        "params_total": result["params"]["total"], "params_trainable": result["params"]["trainable"],
        "best_val_acc": result["best_val_acc"], "best_epoch": result["best_epoch"],
        "val_loss": best["val_loss"] if best else None,
        "test_acc": result["test"]["accuracy"] if "test" in result else None,
        "train_seconds": seconds,
        "images_per_sec": sum(h["images_per_sec"] * h["seconds"] for h in history) / seconds if seconds else None,
        "history": [{k: h[k] for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")} for h in history],
    }


def failed_row(backbone: str, strategy: str, reason: str) -> dict[str, Any]:
    return {"backbone": backbone, "strategy": strategy, "status": "failed", "error": reason, "params_total": None,
            "params_trainable": None, "best_val_acc": None, "best_epoch": None, "val_loss": None, "test_acc": None,
            "train_seconds": None, "images_per_sec": None, "history": []}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return OUT_OF_MEMORY
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best val accuracy first; failed cells last."""
    return sorted(rows, key=lambda r: (r["status"] != "ok", -(r["best_val_acc"] or 0.0), r["backbone"]))


@dataclass
class Grid:
    """One process's share of the grid and what it has found so far."""

    config: CompareConfig
    dataset: Any
    device: torch.device
    out: Path
    events: Events
    rows: list[dict[str, Any]] = field(default_factory=list)
    best: tuple[float, Run] | None = None  # this process's best new cell, for --keep-best
    interrupted: bool = False


def run_cells(grid: Grid, cells: list[tuple[str, str]], total: int) -> None:
    """Train each (backbone, strategy) cell; a backbone's cells reuse one built model, copied per strategy."""
    cache = DecodeCache()
    config, base, base_name = grid.config, None, None
    for index, (backbone, strategy) in cells:
        cell_dir = grid.out / "cells" / cell_name(backbone, strategy)
        grid.events.cell(index, total, f"{backbone} / {strategy}")
        if (cell_dir / "cell.json").exists():
            grid.rows.append(json.loads((cell_dir / "cell.json").read_text()))
            continue
        start = time.perf_counter()
        try:
            if base_name != backbone:  # pretrained weights read once per backbone, head seeded once
                base, base_name = None, None
                base = build_model(backbone, len(grid.dataset.classes), config.weights, grid.device, seed=config.seed)
                base_name = backbone
            cell_config = config.cell_config(backbone, strategy, str(grid.device))
            run = start_run(cell_config, grid.events, cache, grid.dataset, copy.deepcopy(base), world=World())
            cell_dir.mkdir(parents=True, exist_ok=True)
            # the row's val numbers come from the history; only the test split needs the best weights again
            result = train_loop(run, cell_dir, grid.events, save_checkpoints=False, final_splits=("test",))
        except (CatdogError, RuntimeError, ValueError) as exc:  # CUDA out of memory is a RuntimeError
            grid.rows.append(failed_row(backbone, strategy, _reason(exc)))
            grid.events.note(f"{backbone} / {strategy} failed: {_reason(exc)}")
            if grid.device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        if result["interrupted"]:
            grid.interrupted = True
            return
        row = row_from(result, backbone, strategy) | {"cell_seconds": time.perf_counter() - start}
        grid.rows.append(row)
        grid.events.cell_done(row)
        atomic_write_text(cell_dir / "cell.json", json.dumps(row))
        if grid.best is None or row["best_val_acc"] > grid.best[0]:
            grid.best = (row["best_val_acc"], run)  # train_loop left the best weights loaded


def compare(config: CompareConfig, out: Path | str | None = None, events: Events | None = None,
            keep_best: bool = False) -> dict[str, Any]:
    """Run the grid; finished cells of an earlier run into the same OUT are read back, not retrained.

    Under torchrun the cells are dealt round-robin to the ranks, each training its cells on its own device;
    rank 0 gathers the rows and writes the outputs.
    """
    world = distributed.world()
    events = events if events is not None and world.main else Events()
    for name in config.strategies:
        if name not in STRATEGIES:
            raise CatdogError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    device = resolve_device(distributed.device_for(config.device, world))
    dataset = load_dataset(config.data, config.val_split, config.seed)
    out = Path(distributed.broadcast(str(claim_compare_dir(out, config)) if world.main else None, world))
    earlier_best = max((r["best_val_acc"] or 0.0 for r in _finished_rows(out)), default=-1.0)
    cells = list(enumerate((b, s) for b in config.backbones for s in config.strategies))
    grid = Grid(config, dataset, device, out, events)
    start = time.perf_counter()
    try:
        run_cells(grid, cells[world.rank :: world.size], len(cells))
    except KeyboardInterrupt:  # between cells: stop, and report what finished
        grid.interrupted = True
    rows = [row for part in distributed.gather(grid.rows, world) for row in part]
    new_best = distributed.gather(grid.best[0] if grid.best else -1.0, world)
    winner = max(range(len(new_best)), key=new_best.__getitem__)
    if keep_best and new_best[winner] > earlier_best and world.rank == winner:
        grid.best[1].save(out / "best.pt", with_optimizer=False)
    interrupted = any(distributed.gather(grid.interrupted, world))
    result = {
        "kind": "compare", "config": asdict(config), "device": str(device), "world_size": world.size,
        "classes": dataset.classes, "split_origin": dataset.origin, "versions": checkpoints.versions(),
        "out": str(out), "interrupted": interrupted, "wall_seconds": time.perf_counter() - start,
        "best": str(out / "best.pt") if keep_best and (out / "best.pt").exists() else None,
        "rows": sort_rows(rows),
    }
    if world.main:
        write_outputs(out, result)
    return result


def _finished_rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("cells/*/cell.json"))]


COLUMNS = [("backbone", "backbone"), ("strategy", "strategy"), ("params_total", "params"),
           ("params_trainable", "trainable"), ("best_val_acc", "val acc (best epoch)"), ("best_epoch", "epoch"),
           ("val_loss", "val loss"), ("test_acc", "test acc (best weights)"), ("train_seconds", "train time"),
           ("images_per_sec", "img/s"), ("status", "status"), ("error", "error")]


def write_outputs(out: Path, result: dict[str, Any]) -> None:
    """compare.json (everything), compare.csv and compare.md (the table)."""
    text = json.dumps(result, indent=2)
    atomic_write_text(out / "compare.json", text)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([key for key, _ in COLUMNS])
    for row in result["rows"]:
        writer.writerow(["" if row[key] is None else row[key] for key, _ in COLUMNS])
    atomic_write_text(out / "compare.csv", buffer.getvalue())
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in result["rows"]:
        lines.append("| " + " | ".join(formatting.cell(key, row[key]) for key, _ in COLUMNS) + " |")
    md = f"Accuracies are on the val split ({result['split_origin']}).\n\n" + "\n".join(lines) + "\n"
    atomic_write_text(out / "compare.md", md)
    report.write_compare_report(result, out / "report.html")

