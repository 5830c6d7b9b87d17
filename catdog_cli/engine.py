"""The training run: data -> model -> strategy's parameter groups -> epochs of (train, validate, checkpoint).

Read it top to bottom: `start_run` decides everything once (device, sources, what a step feeds the model),
`train_one_epoch` is the step loop, `run_epoch` adds validation, `train_loop` keeps the best weights and the
files, `fit` and `resume` are the entry points. Using a trained model lives in inference.py.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from catdog_cli import checkpoints, distributed
from catdog_cli import report as report_module
from catdog_cli.backbones import TransferModel, build_model, check_image_size, count_params
from catdog_cli.config import TrainConfig
from catdog_cli.data import Dataset, ImageBatch, load_dataset, no_val_reason, split_record, split_summary
from catdog_cli.errors import CatdogError
from catdog_cli.events import Events
from catdog_cli.explain import add_heatmaps
from catdog_cli.inference import (  # evaluate_checkpoint and predict: re-exported, the README's Python API
    TOP_LOSSES,
    EvalOutput,
    evaluate,
    evaluate_checkpoint,
    evaluation_record,
    predict,
    top_losses,
)
from catdog_cli.paths import atomic_write_text, run_folder
from catdog_cli.pipeline import DataSources, DecodeCache, Inputs, feature_source, memory_budget, open_sources
from catdog_cli.records import EpochRecord, RunSummary, TrainResult, to_json
from catdog_cli.runtime import Precision, StopRequest, default_batch_size, resolve_device, warmup_cosine
from catdog_cli.strategies import param_groups
from catdog_cli.world import World

__all__ = ["Events", "Run", "TrainConfig", "TrainState", "evaluate_checkpoint", "fit", "predict", "start_run",
           "train_loop"]

Preprocess = Callable[[ImageBatch, torch.Generator | None], torch.Tensor]


@dataclass
class TrainState:
    """Everything a resumed run needs besides the config."""

    epoch: int = 0  # epochs completed
    step: int = 0  # steps done inside the epoch in progress (after an interruption)
    history: list[EpochRecord] = field(default_factory=list)
    best_val_acc: float = -1.0
    best_epoch: int = 0


@dataclass
class Run:
    """A training run in the making: the pieces `fit` and `compare` share.

    `forward` and `preprocess` are what a step runs: the model on augmented images, or (freeze without
    augmentation) the head alone on backbone features computed once; DDP and --compile wrap `forward`.
    """

    config: TrainConfig  # as resolved for this run: lr, batch size and image size filled in
    dataset: Dataset
    device: torch.device
    inputs: Inputs
    model: TransferModel
    forward: nn.Module
    preprocess: Preprocess
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    precision: Precision
    sources: DataSources
    steps: int  # per epoch; under torchrun the same on every rank
    world: World = field(default_factory=World)
    state: TrainState = field(default_factory=TrainState)

    def meta(self) -> dict[str, Any]:
        c = self.config
        return {"backbone": c.backbone, "classes": self.dataset.classes, "image_size": self.inputs.image_size,
                "resize": self.inputs.resize, "mean": list(self.inputs.mean), "std": list(self.inputs.std),
                "strategy": c.strategy, "config": asdict(c), "data": str(self.dataset.root.resolve()),
                "split_origin": self.dataset.origin, "split": self.split}

    @functools.cached_property
    def split(self) -> dict[str, Any]:
        """The files this run trains and validates on (recorded in every checkpoint; made once, not per save)."""
        return split_record(self.dataset)

    def save(self, path: Path, with_optimizer: bool) -> None:
        meta = {**self.meta(), "state": asdict(self.state)}
        if with_optimizer:
            meta |= {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "scaler": self.precision.scaler.state_dict()}
        checkpoints.save(path, self.model, meta)


def cached_features(batch: ImageBatch, generator: torch.Generator | None = None) -> torch.Tensor:
    """A batch of backbone features computed once is already the head's input."""
    return batch.images


def _wrap(forward: nn.Module, config: TrainConfig, device: torch.device, world: World) -> nn.Module:
    """DDP averages gradients over ranks (and starts every rank from rank 0's weights); --compile compiles."""
    if world.distributed:
        forward = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        forward = torch.compile(forward)
    return forward


def run_summary(config: TrainConfig, dataset: Dataset, device: torch.device, out: Path | str | None,
                model: TransferModel | None = None) -> RunSummary:
    """What a run is about to do, for Events.summary (compare puts its grid over a cell's)."""
    params = {}
    if model is not None:
        total, trainable = count_params(model)
        params[config.backbone] = {"total": total, "trainable": trainable}
    return {"kind": "train", "data": str(dataset.root), "classes": dataset.classes,
            "images": {name: len(split) for name, split in dataset.splits.items()}, "split_origin": dataset.origin,
            "backbones": [config.backbone], "strategies": [config.strategy],
            "weights": {config.backbone: config.weights}, "params": params, "lr": config.lr, "epochs": config.epochs,
            "batch_size": config.batch_size or default_batch_size(device), "image_size": config.image_size,
            "augment": config.augment, "device": str(device), "precision": Precision(device, config.precision).name,
            "out": str(out) if out is not None else "not saved"}


def start_run(config: TrainConfig, events: Events, cache: DecodeCache | None = None,
              dataset: Dataset | None = None, model: TransferModel | None = None, world: World | None = None,
              out: Path | str | None = None) -> Run:
    """Data, model, optimizer; `model` may be prebuilt (compare copies one per strategy).

    `world`: under torchrun (the default when launched by it) each rank trains on its shard of the data.
    `out`: where the run will be saved, for the summary told before the work starts.
    """
    world = distributed.current() if world is None else world
    config.check(weights=model is None)
    device = resolve_device(distributed.device_for(config.device, world))
    dataset = dataset or load_dataset(config.data, config.val_split, config.seed)
    for note in dataset.notes:
        events.note(note)
    if not dataset.splits.get("val"):
        raise CatdogError(no_val_reason(dataset))
    inputs = Inputs.for_backbone(config.backbone, config.image_size)
    check_image_size(config.backbone, inputs.image_size)
    if model is None:
        model = build_model(config.backbone, len(dataset.classes), config.weights, device, seed=config.seed)
    groups = param_groups(config.strategy, model, config.lr, config.lr_ratio)
    # record what the run really uses, not "default"
    config = replace(config, batch_size=config.batch_size or default_batch_size(device), lr=groups[-1]["lr"],
                     image_size=inputs.image_size)
    precision = Precision(device, config.precision)
    model = precision.prepare(model)
    events.summary(run_summary(config, dataset, device, out, model))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # input shapes are fixed (full batches), so autotuning pays off
    cache, budget = cache or DecodeCache(), memory_budget(device, config.cache_gib)
    sources = open_sources(dataset, inputs, device, config.batch_size, config.seed, config.augment, cache, budget,
                           config.workers, events, world)
    forward, preprocess = model, inputs.model_input
    if model.frozen and not config.augment:  # the same pixels every epoch: run the backbone once, train the head
        features = feature_source(model, sources.splits["train"], inputs, precision, config.batch_size, config.seed,
                                  cache, budget, config.workers, events)
        if features is not None:
            sources.train, forward, preprocess = features, model.head, cached_features
    steps = distributed.all_min(len(sources.train), device, world)
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    total = config.epochs * steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, min(100, max(1, total // 20))))
    return Run(config, dataset, device, inputs, model, _wrap(forward, config, device, world), preprocess, optimizer,
               scheduler, precision, sources, steps, world)


def _stop_if_diverged(loss: float, what: str, run: Run) -> None:
    """A loss that is not finite means the weights are lost (too high an --lr, bad data): stop now, before such
    weights are saved or chosen as best (a NaN model still "predicts" class 0 and can even score). Under torchrun
    every rank stops together, none waits for a rank that left."""
    here = not math.isfinite(loss)
    if distributed.any_rank(here, run.device, run.world):
        value = loss if here else "not finite on another rank"
        raise CatdogError(f"training diverged: the {what} loss became {value} in epoch {run.state.epoch + 1}; "
                          "stopped without saving that epoch (try a lower --lr)")


def train_one_epoch(run: Run, events: Events, stop: StopRequest,
                    generator: torch.Generator) -> dict[str, float] | None:
    """One pass over train; None if a stop was requested (the run's state then says where it stopped)."""
    opt, epoch = run.optimizer, run.state.epoch
    run.model.train()
    # shuffle, augmentation and dropout depend on (seed, epoch, rank) only: a resumed run or a compare cell draws
    # the same numbers whatever ran before it. Dropout can only use torch's global generator: seed that too.
    epoch_seed = run.config.seed * 1_000_003 + epoch * 1_009 + run.world.rank
    run.sources.train.set_epoch(epoch)
    generator.manual_seed(epoch_seed)
    torch.manual_seed(epoch_seed + 1)
    loss_sum = torch.zeros((), device=run.device)
    correct = torch.zeros((), device=run.device, dtype=torch.int64)
    seen = 0
    events.task(f"epoch {epoch + 1}/{run.config.epochs}", run.steps)
    for i, batch in zip(range(run.steps), run.sources.train):
        if i < run.state.step:  # resuming inside an epoch: these steps were already taken
            events.advance(1)
            continue
        x = run.preprocess(batch, generator)
        with run.precision.autocast():
            logits = run.forward(x)
            loss = F.cross_entropy(logits.float(), batch.labels)
        opt.zero_grad(set_to_none=True)
        run.precision.scaler.scale(loss).backward()
        run.precision.scaler.step(opt)
        run.precision.scaler.update()
        run.scheduler.step()
        loss_sum += loss.detach() * len(batch)
        correct += (logits.argmax(1) == batch.labels).sum()
        seen += len(batch)
        run.state.step = i + 1
        if (i + 1) % 25 == 0:  # a host sync now and then, for the live numbers and to stop a diverged run
            so_far = loss_sum.item()
            _stop_if_diverged(so_far, "training", run)
            events.advance(1, loss=so_far / seen, acc=correct.item() / seen)
        else:
            events.advance(1)
        if distributed.any_rank(stop.requested, run.device, run.world):  # every rank stops after the same step
            stop.requested = True
            _stop_if_diverged(loss_sum.item(), "training", run)  # last.pt is saved next: never diverged weights
            return None
    run.state.step = 0
    totals = distributed.all_sum(torch.stack([loss_sum.double(), correct.double(),
                                              torch.tensor(seen, dtype=torch.float64, device=run.device)]), run.world)
    _stop_if_diverged(totals[0].item(), "training", run)
    n = max(1.0, totals[2].item())
    return {"train_loss": totals[0].item() / n, "train_acc": totals[1].item() / n, "images": int(totals[2].item())}


def validate(run: Run, events: Events) -> EvalOutput:
    distributed.sync_buffers(run.model, run.world)  # all ranks evaluate and end with rank 0's BatchNorm statistics
    events.task(f"val {run.state.epoch + 1}/{run.config.epochs}", len(run.sources.splits["val"]))
    return evaluate(run.model, run.sources.val, run.inputs, run.precision, len(run.dataset.classes), events, run.world)


def run_epoch(run: Run, events: Events, stop: StopRequest, generator: torch.Generator) -> EpochRecord | None:
    """Train one epoch, then validate; the epoch's record (also appended to the history), or None if stopped."""
    start = time.perf_counter()
    train = train_one_epoch(run, events, stop, generator)
    if train is None:
        return None
    seconds = time.perf_counter() - start
    val = validate(run, events)
    _stop_if_diverged(val.loss, "val", run)  # the epoch's last step can break the weights too
    run.state.epoch += 1
    record: EpochRecord = {
        "epoch": run.state.epoch, "train_loss": train["train_loss"], "train_acc": train["train_acc"],
        "val_loss": val.loss, "val_acc": val.accuracy, "lr": run.optimizer.param_groups[-1]["lr"],
        "seconds": seconds, "images_per_sec": train["images"] / seconds}
    run.state.history.append(record)
    return record


def write_metrics_csv(path: Path, history: list[EpochRecord]) -> None:
    if not history:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buffer.getvalue())


def keep_checkpoints(run: Run, out: Path, writes: bool) -> dict[str, torch.Tensor] | None:
    """After an epoch: best.pt when val accuracy improved (the best weights returned, kept in memory too),
    last.pt and metrics.csv always. Under torchrun rank 0 alone writes."""
    state, best = run.state, None
    if state.history[-1]["val_acc"] > state.best_val_acc:
        state.best_val_acc, state.best_epoch = state.history[-1]["val_acc"], state.epoch
        best = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
        if writes:
            run.save(out / "best.pt", with_optimizer=False)
    if writes:
        run.save(out / "last.pt", with_optimizer=True)
    if run.world.main:
        write_metrics_csv(out / "metrics.csv", state.history)
    return best


def train_loop(run: Run, out: Path, events: Events, save_checkpoints: bool = True,
               final_splits: tuple[str, ...] = ("val", "test")) -> TrainResult:
    """Epochs until done or stopped. The best weights are also kept in memory, for the final evaluation on
    `final_splits` and for compare, which writes no per-cell checkpoints and needs only the test split."""
    writes = save_checkpoints and run.world.main
    best_state = None
    generator = torch.Generator(device=run.device)
    stop = StopRequest()
    with stop.installed():
        while run.state.epoch < run.config.epochs and not distributed.any_rank(stop.requested, run.device, run.world):
            record = run_epoch(run, events, stop, generator)
            if record is None:
                break
            best_state = keep_checkpoints(run, out, writes) or best_state
            events.epoch(record)
        interrupted = run.state.epoch < run.config.epochs  # a signal stopped it, mid-epoch or between epochs
        if interrupted and writes:
            run.save(out / "last.pt", with_optimizer=True)
            events.note(f"interrupted: saved {out / 'last.pt'}; continue with `catdog train --resume {out}`")
    if best_state is None and save_checkpoints and (out / "best.pt").exists():  # resumed after the best epoch
        best_state = checkpoints.load(out / "best.pt")["state_dict"]  # on every rank: all evaluate it together
    result = summarize(run, out, best_state, interrupted, final_splits)
    if writes:  # a train run (compare's cells have one report for the grid)
        result["report"] = str(report_module.write_train_report(result, out / "report.html"))
    result["split"] = split_summary(run.split)  # last: the keys before it keep their places
    if run.world.main:
        atomic_write_text(out / "run.json", to_json(result))
    return result


def summarize(run: Run, out: Path, best_state: dict[str, torch.Tensor] | None, interrupted: bool,
              final_splits: tuple[str, ...] = ("val", "test")) -> TrainResult:
    """Evaluate the best weights on val (and test), with the top losses: the numbers a person decides from."""
    classes, state = run.dataset.classes, run.state
    total, trainable = count_params(run.model)
    skipped = run.sources.skipped
    left_out = {p for p, _ in skipped}
    result: TrainResult = {
        "kind": "train", "config": asdict(run.config), "versions": checkpoints.versions(),
        "device": str(run.device), "precision": run.precision.name, "classes": classes,
        "split_origin": run.dataset.origin, "params": {"total": total, "trainable": trainable},
        "history": state.history, "epochs": state.epoch, "best_epoch": state.best_epoch,
        "best_val_acc": state.best_val_acc if state.history else None, "interrupted": interrupted,
        "skipped": [{"path": str(p), "reason": r} for p, r in skipped], "out": str(out),
        "images": {name: sum(p not in left_out for p in split.paths) for name, split in run.dataset.splits.items()},
    }
    if best_state is None:
        return result
    run.model.load_state_dict(best_state)
    for name, source in (("val", run.sources.val), ("test", run.sources.test)):
        if source is None or name not in final_splits:
            continue
        ev = evaluate(run.model, source, run.inputs, run.precision, len(classes), world=run.world)
        result["evaluation" if name == "val" else "test"] = {**evaluation_record(ev, classes, name),
                                                              "checkpoint": f"best (epoch {state.best_epoch})"}
        if name == "val":  # each rank names its shard's worst; rank 0 keeps the worst overall
            shards = distributed.gather(top_losses(ev, run.sources.splits["val"], classes), run.world)
            found = [t for part in shards for t in part]
            result["top_losses"] = sorted(found, key=lambda t: -t["loss"])[:TOP_LOSSES]
            if run.world.main:  # where the model looked in each, for the report
                add_heatmaps(run.model, result["top_losses"], classes, run.inputs, run.device)
    return result


def fit(config: TrainConfig, out: Path | str | None = None, events: Events | None = None,
        cache: DecodeCache | None = None) -> TrainResult:
    """Train, keeping best.pt (best val accuracy) and last.pt, and return the run record (run.json)."""
    world = distributed.init()
    events = events if events is not None and world.main else Events()
    config.check()
    with ExitStack() as stack:  # the folder is claimed before any work (two runs never share one), held to the end
        folder = distributed.main_enters(stack, lambda: run_folder(out, "train"), world)
        run = start_run(config, events, cache, world=world, out=folder)
        return train_loop(run, folder, events)
