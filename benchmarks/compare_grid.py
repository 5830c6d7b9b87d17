"""A compare grid, catdog's engine vs the PyTorch tutorial's pipeline, in one process, on one device.

    python benchmarks/compare_grid.py --data path/to/catdog --epochs 5

catdog:   `catdog_cli.training.compare.compare` as `catdog compare` runs it: images decoded once for the whole grid,
          resident on the device, augmented there, bf16 autocast and channels_last on CUDA and on
          CPUs with native bf16 (`--precision`), batch 128.
tutorial: per cell, ImageFolder + PIL RandomResizedCrop/flip/ToTensor/Normalize in DataLoader workers, fp32,
          batch 32, val with Resize + CenterCrop every epoch; the model from `build_model` and the optimizer
          groups from `param_groups` (AdamW, catdog's warm-up + cosine schedule), so heads and strategies match.
Both wall times count the whole grid (finding the images, building models, decoding, training, validating).
catdog's per-cell fixed overhead is a cell's wall time minus its train and val compute: train from the cell's
`train_seconds`, val from a separately timed `evaluate` of the backbone on the resident val split; the grid's
one decode is reported apart and not counted in the first cell's overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from pipeline import (
    device_name,
    sync,
    tutorial_eval_transforms,
    tutorial_evaluate,
    tutorial_loader,
    tutorial_train_epoch,
    tutorial_transforms,
)

from catdog_cli.core.config import CompareConfig, TrainConfig
from catdog_cli.core.defaults import GRID_STRATEGIES, PRECISIONS, SEED_BACKBONES
from catdog_cli.core.events import Events
from catdog_cli.core.paths import resolve_data
from catdog_cli.data.dataset import load_dataset
from catdog_cli.data.decode import default_workers
from catdog_cli.data.sources import DecodeCache, Loader, batches, memory_budget
from catdog_cli.errors import CatdogError
from catdog_cli.inference.evaluate import evaluate
from catdog_cli.models.backbones import build_model, preset_for
from catdog_cli.models.strategies import param_groups
from catdog_cli.runtime.device import Precision, resolve_device
from catdog_cli.training.compare import compare
from catdog_cli.training.schedule import warmup_cosine


class Timeline(Events):
    """Timestamps of compare's events: per-cell wall time, the grid's decode, and where a cell's time goes."""

    def __init__(self):
        self.cells: list[dict[str, Any]] = []
        self.decode_start: float | None = None
        self.decode_seconds: float | None = None
        self.val_start = 0.0
        self.last_epoch = 0.0

    def cell(self, index: int, total: int, name: str) -> None:
        self.cells.append(
            {"start": time.perf_counter(), "first_epoch": None, "val_windows": [], "end": None, "unix": [time.time()]}
        )

    def task(self, description: str, total: int, batch: int = 1) -> None:
        now = time.perf_counter()
        if description.startswith("decoding") and self.decode_start is None:
            self.decode_start = now
        elif description.startswith("epoch") and self.cells and self.cells[-1]["first_epoch"] is None:
            self.cells[-1]["first_epoch"] = now
            if self.decode_seconds is None and self.decode_start is not None:
                self.decode_seconds = now - self.decode_start  # train and val, to the device
        elif description.startswith("val"):
            self.val_start = now

    def epoch(self, record: dict[str, Any]) -> None:
        self.last_epoch = time.perf_counter()
        self.cells[-1]["val_windows"].append(self.last_epoch - self.val_start)

    def cell_done(self, row: dict[str, Any]) -> None:
        cell = self.cells[-1]
        cell["end"] = time.perf_counter()
        cell["unix"].append(time.time())  # [start, end]: gpu_check.sh finds each cell's nvidia-smi peak memory
        cell["tail"] = cell["end"] - self.last_epoch  # final evaluation of the best weights, run.json


def warm_page_cache(root: Path) -> int:
    """Read every file once so that neither pipeline pays the first read from disk."""
    n = 0
    for split in ("train", "val"):
        for path in (root / split).rglob("*"):
            if path.is_file():
                path.read_bytes()
                n += 1
    return n


def warm_device(device: torch.device) -> None:
    """CUDA context and cuDNN loaded before either pipeline is timed."""
    if device.type == "cuda":
        conv = torch.nn.Conv2d(3, 8, 3).to(device)
        conv(torch.randn(2, 3, 32, 32, device=device)).sum().backward()
        sync(device)


def eval_seconds(data: str, backbones: list[str], args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """One val pass of each backbone as compare's cells run it (resident source, its precision)."""
    dataset = load_dataset(data, seed=args.seed)
    cache, precision, found = DecodeCache(), Precision(device, args.precision), {}
    for backbone in backbones:
        preset = preset_for(backbone, args.image_size)
        loader = Loader(device, args.batch_size, args.workers, budget=memory_budget(device), cache=cache)
        source = batches(dataset.splits["val"], preset.eval_spec(), loader)
        model = precision.prepare(build_model(backbone, len(dataset.classes), args.weights, device, seed=args.seed))
        evaluate(model, source, preset, precision, len(dataset.classes))  # warm-up
        times = []
        for _ in range(3):
            start = time.perf_counter()
            evaluate(model, source, preset, precision, len(dataset.classes))  # ends in a host sync (.item())
            times.append(time.perf_counter() - start)
        found[backbone] = statistics.median(times)
        del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return found


def run_catdog(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    train = TrainConfig(
        args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        weights=args.weights,
        device=str(device),
        seed=args.seed,
        workers=args.workers,
        precision=args.precision,
    )
    config = CompareConfig(train, backbones=args.backbones, strategies=args.strategies)
    timeline = Timeline()
    with tempfile.TemporaryDirectory(prefix="compare-grid-") as out:
        sync(device)
        start = time.perf_counter()
        result = compare(config, out, timeline)
        sync(device)
        wall = time.perf_counter() - start
    done = [b for b in args.backbones if any(r["backbone"] == b and r["status"] == "ok" for r in result["rows"])]
    evals = eval_seconds(args.data, done, args, device)
    rows = {(r["backbone"], r["strategy"]): r for r in result["rows"]}
    cells = [(b, s) for b in args.backbones for s in args.strategies]
    table, overheads, first_of_backbone, others = [], [], [], []
    parts: dict[str, list[float]] = {"setup": [], "epoch_bookkeeping": [], "final_eval_and_write": []}
    for i, (cell, timing) in enumerate(zip(cells, timeline.cells)):
        row = rows.get(cell)
        if row is None:  # interrupted (Ctrl-C, SIGTERM) inside this cell
            break
        entry = {
            "backbone": row["backbone"],
            "strategy": row["strategy"],
            "status": row["status"],
            "best_val_acc": row["best_val_acc"],
            "train_seconds": _round(row["train_seconds"]),
            "unix": timing["unix"],
        }
        if row["status"] != "ok" or timing["end"] is None:
            table.append({**entry, "error": row["error"]})
            continue
        decode = timeline.decode_seconds if i == 0 else 0.0
        cell_wall = timing["end"] - timing["start"]
        val = evals[row["backbone"]] * len(timing["val_windows"])
        overhead = cell_wall - decode - row["train_seconds"] - val
        overheads.append(overhead)
        # the first strategy's cell also built the backbone's model
        (first_of_backbone if cell[1] == args.strategies[0] else others).append(overhead)
        parts["setup"].append(timing["first_epoch"] - timing["start"] - decode)
        parts["epoch_bookkeeping"].append(sum(timing["val_windows"]) - val)
        parts["final_eval_and_write"].append(timing["tail"])
        table.append(
            {
                **entry,
                "cell_seconds": _round(cell_wall),
                "val_seconds": _round(val),
                "overhead_seconds": _round(overhead),
            }
        )
    return {
        "interrupted": result["interrupted"],
        "wall_s": round(wall, 2),
        "compare_wall_seconds": round(result["wall_seconds"], 2),
        "batch_size": args.batch_size,
        "precision": Precision(device, args.precision).name,
        "decode_s": _round(timeline.decode_seconds),
        "per_cell_overhead_s": {
            "mean": _mean(overheads),
            "max": _round(max(overheads, default=None)),
            "first_cell_of_backbone_mean": _mean(first_of_backbone),
            "other_cells_mean": _mean(others),
            "breakdown_mean": {k: _mean(v) for k, v in parts.items()},
        },
        "val_pass_s": {b: _round(t) for b, t in evals.items()},
        "table": table,
    }


def tutorial_cell(args: argparse.Namespace, device: torch.device, backbone: str, strategy: str) -> dict[str, Any]:
    root = resolve_data(args.data)
    preset = preset_for(backbone, args.image_size)
    train = tutorial_loader(
        root / "train",
        tutorial_transforms(preset.image_size, preset.mean, preset.std),
        args.tutorial_batch_size,
        args.workers,
        device,
    )
    val = tutorial_loader(
        root / "val",
        tutorial_eval_transforms(preset.resize, preset.image_size, preset.mean, preset.std),
        args.tutorial_batch_size,
        args.workers,
        device,
        shuffle=False,
    )
    torch.manual_seed(args.seed)
    model = build_model(backbone, len(train.dataset.classes), args.weights, device, seed=args.seed)
    opt = torch.optim.AdamW(param_groups(strategy, model), weight_decay=0.01)
    total = args.epochs * len(train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total))
    best, train_seconds = 0.0, 0.0
    for _ in range(args.epochs):
        sync(device)
        epoch_start = time.perf_counter()
        tutorial_train_epoch(model, train, opt, device, scheduler)
        sync(device)
        train_seconds += time.perf_counter() - epoch_start
        best = max(best, tutorial_evaluate(model, val, device))
    return {"best_val_acc": best, "train_seconds": _round(train_seconds)}  # the loaders' workers end with them


def run_tutorial(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    table = []
    sync(device)
    start = time.perf_counter()
    for backbone in args.backbones:
        for strategy in args.strategies:
            cell_start = time.perf_counter()
            try:
                row = {"status": "ok", **tutorial_cell(args, device, backbone, strategy)}
            except (CatdogError, RuntimeError, ValueError) as exc:  # as compare: a failed cell, the grid goes on
                row = {
                    "status": "failed",
                    "error": str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                }
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            table.append(
                {
                    "backbone": backbone,
                    "strategy": strategy,
                    **row,
                    "cell_seconds": _round(time.perf_counter() - cell_start),
                }
            )
    sync(device)
    return {
        "wall_s": round(time.perf_counter() - start, 2),
        "batch_size": args.tutorial_batch_size,
        "workers": args.workers,
        "table": table,
    }


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def _mean(xs: list[float]) -> float | None:
    return _round(statistics.mean(xs)) if xs else None


def _write(path: Path | None, result: dict[str, Any]) -> None:
    if path is not None:
        partial = path.with_name(path.name + ".tmp")
        partial.write_text(json.dumps(result, indent=2))
        partial.replace(path)


def _list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a folder with train/ and val/ (e.g. catdog, fetched)")
    parser.add_argument("--backbones", type=_list, default=list(SEED_BACKBONES))
    parser.add_argument("--strategies", type=_list, default=list(GRID_STRATEGIES))
    parser.add_argument("--epochs", type=int, default=5, help="epochs per cell")
    parser.add_argument("--batch-size", type=int, default=128, help="catdog's batch size")
    parser.add_argument("--tutorial-batch-size", type=int, default=32)
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, default_workers()),
        help="tutorial DataLoader workers and catdog decode threads",
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--weights", default="none", help="none (random init), default (torchvision's) or a path")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="catdog's (the tutorial: fp32)")
    parser.add_argument("--skip-tutorial", action="store_true")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="also write the JSON here, after each half (a run cut short keeps catdog's figures)",
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    result: dict[str, Any] = {
        "device": device_name(device),
        "cores": default_workers(),
        "date": time.strftime("%Y-%m-%d"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": {"torch": torch.__version__},
        "data": str(resolve_data(args.data)),
        "grid": {
            "backbones": args.backbones,
            "strategies": args.strategies,
            "epochs": args.epochs,
            "image_size": args.image_size,
            "weights": args.weights,
        },
    }
    result["files_read_for_page_cache"] = warm_page_cache(resolve_data(args.data))
    warm_device(device)
    benchmark_flag = torch.backends.cudnn.benchmark
    result["catdog"] = run_catdog(args, device)
    _write(args.out, result)
    torch.backends.cudnn.benchmark = benchmark_flag  # catdog turns autotuning on; the tutorial as written does not
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if not args.skip_tutorial and not result["catdog"]["interrupted"]:
        result["tutorial"] = run_tutorial(args, device)
        result["speedup"] = round(result["tutorial"]["wall_s"] / result["catdog"]["wall_s"], 2)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    _write(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
