"""The training run: data -> model -> strategy's parameter groups -> epochs of (train, validate, checkpoint).

Read it top to bottom: `start_run` decides everything once (device, sources, what a step feeds the model, the
loss, MixUp/CutMix, EMA), `train_one_epoch` is the step loop, `run_epoch` adds validation (and unfreezes for
freeze-unfreeze), `train_loop` keeps the best weights and the files and stops early, `fit` and `resume` are the
entry points. Using a trained model lives in inference.py.
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
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from catdog_cli import calibration, checkpoints, distributed, warm_start
from catdog_cli import report as report_module
from catdog_cli.augment import Mixing
from catdog_cli.backbones import TransferModel, build_model, check_image_size, count_params
from catdog_cli.balance import class_counts, imbalance_note, inverse_frequency
from catdog_cli.config import TrainConfig
from catdog_cli.data import Dataset, ImageBatch, load_dataset, no_val_reason, split_record, split_summary
from catdog_cli.ema import EMA
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
from catdog_cli.pipeline import (
    CachedFeatures,
    DataSources,
    DecodeCache,
    Inputs,
    feature_source,
    memory_budget,
    open_sources,
)
from catdog_cli.records import EpochRecord, RunSummary, TrainResult, to_json
from catdog_cli.runtime import Precision, StopRequest, default_batch_size, lr_schedule, resolve_device, warmup_cosine
from catdog_cli.strategies import param_groups, unfreeze_epoch
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
    best_val_loss: float = math.inf  # breaks ties of val accuracy
    best_epoch: int = 0
    schedule_from: int = 0  # the step the LR schedule (re)started at: > 0 once `--resume --epochs` extended the run
    best_is_ema: bool = False  # the best weights are the EMA's (--ema)
    ended: str = ""  # why the run finished before its last epoch (early stopping); "" while it may go on


@dataclass
class Run:
    """A training run in the making: the pieces `fit` and `compare` share.

    `forward` and `preprocess` are what a step runs: the model on augmented images, or (freeze without
    augmentation) the head alone on backbone features computed once; DDP and --compile wrap `forward`.
    `mixing` (MixUp/CutMix) then mixes the batch, `criterion` is the loss, `ema` follows each step.
    `val_features`: val is a source of backbone features computed once (freeze), evaluated by the head alone.
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
    criterion: nn.Module = field(default_factory=nn.CrossEntropyLoss)
    mixing: Mixing | None = None
    ema: EMA | None = None
    val_features: bool = False
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

    def save(self, path: Path, with_optimizer: bool, model: TransferModel | None = None) -> None:
        """`model`: other weights of this run's model to save (the EMA's), by default the trained ones."""
        meta = {**self.meta(), "state": asdict(self.state)}
        if with_optimizer:
            meta |= {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "scaler": self.precision.scaler.state_dict()}
            if self.ema is not None:
                meta["ema"] = self.ema.state_dict()
        checkpoints.save(path, model or self.model, meta)

    def evaluable(self, model: TransferModel) -> tuple[nn.Module, Inputs | CachedFeatures]:
        """What evaluates `model` on the val source: its head on cached features, or the model on images."""
        return (model.head, CachedFeatures()) if self.val_features else (model, self.inputs)



def _wrap(forward: nn.Module, config: TrainConfig, device: torch.device, world: World) -> nn.Module:
    """DDP averages gradients over ranks (and starts every rank from rank 0's weights); --compile compiles."""
    if world.distributed:
        forward = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        forward = torch.compile(forward)
    return forward


def lr_factor(config: TrainConfig, steps: int) -> Callable[[int], float]:
    """Warm-up then cosine decay over the run; freeze-unfreeze starts a second one when the whole model joins
    (as fastai's fine_tune does): the backbone's first steps are warmed up too."""
    total = config.epochs * steps
    restart = unfreeze_epoch(config.strategy, config.freeze_epochs)
    if restart is None:
        return warmup_cosine(total)
    first, second = restart * steps, total - restart * steps
    frozen, unfrozen = warmup_cosine(first), warmup_cosine(second)
    return lambda step: frozen(step) if step < first else unfrozen(step - first)


def class_weights(config: TrainConfig, dataset: Dataset, events: Events) -> list[float] | None:
    """Notes an imbalance of the training classes; the inverse-frequency weights the sampler draws by (--balance)."""
    counts = class_counts(dataset.splits["train"].labels, len(dataset.classes))
    note = imbalance_note(dataset.classes, counts)
    if note:
        events.note(f"{note}: --balance is on" if config.balance else note)
    return inverse_frequency(counts) if config.balance else None


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
            "out": str(out) if out is not None else "not saved", "recipe": config.recipe()}


def start_run(config: TrainConfig, events: Events, cache: DecodeCache | None = None,
              dataset: Dataset | None = None, model: TransferModel | None = None, world: World | None = None,
              out: Path | str | None = None) -> Run:
    """Data, model, optimizer, loss; `model` may be prebuilt (compare copies one per strategy).

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
    if model is None and warm_start.is_catdog_checkpoint(config.weights):  # a new run from a trained model
        model = warm_start.from_checkpoint(Path(config.weights), config.backbone, dataset.classes, device,
                                           config.seed, events)
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
    weights = class_weights(config, dataset, events)
    sources = open_sources(dataset, inputs, device, config.batch_size, config.seed, config.augment, cache, budget,
                           config.workers, events, world, weights)
    mixing = Mixing(len(dataset.classes), config.mixup, config.cutmix) if config.mixup or config.cutmix else None
    forward, preprocess, val_features = model, inputs.model_input, False
    if config.strategy == "freeze":  # the backbone never changes: its features of an image are computed once
        forward, preprocess, val_features = _cache_features(config, model, sources, inputs, precision, cache, budget,
                                                            events, mixing, weights)
    steps = distributed.all_min(len(sources.train), device, world)
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    scheduler = lr_schedule(optimizer, lr_factor(config, steps))
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    return Run(config, dataset, device, inputs, model, _wrap(forward, config, device, world), preprocess, optimizer,
               scheduler, precision, sources, steps, criterion=criterion, mixing=mixing,
               ema=EMA(model, config.ema_decay) if config.ema else None, val_features=val_features, world=world)


def _cache_features(config: TrainConfig, model: TransferModel, sources: DataSources, inputs: Inputs,
                    precision: Precision, cache: DecodeCache, budget: int, events: Events, mixing: Mixing | None,
                    weights: list[float] | None) -> tuple[nn.Module, Preprocess, bool]:
    """freeze: val's features once (they never change), and train's too when every epoch sees the same pixels
    (no augmentation, no mixing): then a step trains the head alone. What a step runs, and whether val is cached."""
    forward, preprocess = model, inputs.model_input
    start = time.perf_counter()
    if not config.augment and mixing is None:
        features = feature_source(model, sources.splits["train"], inputs, precision, config.batch_size, config.seed,
                                  cache, budget, config.workers, events,
                                  class_weights=weights)
        if features is not None:
            sources.train, forward, preprocess = features, model.head, CachedFeatures().model_input
    val = feature_source(model, sources.splits["val"], inputs, precision, config.batch_size, config.seed, cache, budget,
                         config.workers, events, shuffle=False, name="val")
    if val is not None:
        sources.val = val
        cached = "train and val" if forward is model.head else "val"
        events.note(f"backbone features of {cached} computed once in {time.perf_counter() - start:.1f}s")
    return forward, preprocess, val is not None


def _stop_if_diverged(loss: float, what: str, run: Run) -> None:
    """A loss that is not finite means the weights are lost (too high an --lr, bad data): stop now, before such
    weights are saved or chosen as best (a NaN model still "predicts" class 0 and can even score). Under torchrun
    every rank stops together, none waits for a rank that left."""
    here = not math.isfinite(loss)
    if distributed.any_rank(here, run.device, run.world):
        value = loss if here else "not finite on another rank"
        raise CatdogError(f"training diverged: the {what} loss became {value} in epoch {run.state.epoch + 1}; "
                          "stopped without saving that epoch (try a lower --lr)")


def train_step(run: Run, batch: ImageBatch, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch: its mean loss and how many images it got right (device tensors, no sync)."""
    x, target, labels = run.preprocess(batch, generator), batch.labels, batch.labels
    if run.mixing is not None:  # MixUp/CutMix: pixels and labels mixed with the same weight
        mixed = run.mixing(x, batch.labels, generator)
        x, target, labels = mixed.images, mixed.targets, mixed.labels
    with run.precision.autocast():
        logits = run.forward(x)
        loss = run.criterion(logits.float(), target)
    run.optimizer.zero_grad(set_to_none=True)
    run.precision.scaler.scale(loss).backward()
    run.precision.scaler.step(run.optimizer)
    run.precision.scaler.update()
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update()
    return loss.detach(), (logits.argmax(1) == labels).sum()


def train_one_epoch(run: Run, events: Events, stop: StopRequest,
                    generator: torch.Generator) -> dict[str, float] | None:
    """One pass over train; None if a stop was requested (the run's state then says where it stopped)."""
    epoch = run.state.epoch
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
        loss, right = train_step(run, batch, generator)
        loss_sum += loss * len(batch)
        correct += right
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


def validate(run: Run, events: Events, model: TransferModel | None = None, name: str = "val") -> EvalOutput:
    """`model` on val: the trained weights, or others of the same model (the EMA's)."""
    model = model or run.model
    distributed.sync_buffers(model, run.world)  # all ranks evaluate and end with rank 0's BatchNorm statistics
    events.task(f"{name} {run.state.epoch + 1}/{run.config.epochs}", len(run.sources.splits["val"]))
    net, inputs = run.evaluable(model)
    return evaluate(net, run.sources.val, inputs, run.precision, len(run.dataset.classes), events, run.world)


def unfreeze(run: Run, events: Events) -> None:
    """freeze-unfreeze after its frozen epochs: the whole model trains from here (DDP and --compile see the new
    trainable parameters: the model is wrapped again)."""
    run.model.unfreeze_features()
    run.forward = _wrap(run.model, run.config, run.device, run.world)
    if run.ema is not None:
        run.ema.track(run.model)
    rates = ", ".join(f"{g['name']} {g['initial_lr']:.2g}" for g in run.optimizer.param_groups)
    events.note(f"epoch {run.state.epoch + 1}: backbone unfrozen, every layer trains (lr {rates})")


def run_epoch(run: Run, events: Events, stop: StopRequest, generator: torch.Generator) -> EpochRecord | None:
    """Train one epoch, then validate; the epoch's record (also appended to the history), or None if stopped.

    Training and validation are timed apart: img/s is the training images over the training time."""
    thaw = unfreeze_epoch(run.config.strategy, run.config.freeze_epochs)
    if thaw is not None and run.state.epoch >= thaw and run.model.frozen:
        unfreeze(run, events)
    start = time.perf_counter()
    train = train_one_epoch(run, events, stop, generator)
    if train is None:
        return None
    seconds = time.perf_counter() - start
    val = validate(run, events)
    _stop_if_diverged(val.loss, "val", run)  # the epoch's last step can break the weights too
    record: EpochRecord = {
        "epoch": run.state.epoch + 1, "train_loss": train["train_loss"], "train_acc": train["train_acc"],
        "val_loss": val.loss, "val_acc": val.accuracy, "lr": run.optimizer.param_groups[-1]["lr"],
        "seconds": seconds, "images_per_sec": train["images"] / max(seconds, 1e-9)}
    if run.ema is not None:
        ema = validate(run, events, run.ema.model, "val (EMA)")
        record |= {"ema_val_loss": ema.loss, "ema_val_acc": ema.accuracy}
    record["val_seconds"] = time.perf_counter() - start - seconds
    run.state.epoch += 1
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


def better(acc: float, loss: float, best_acc: float, best_loss: float) -> bool:
    """Higher val accuracy, or the same with a lower val loss."""
    return acc > best_acc or (acc == best_acc and loss < best_loss)


def update_best(run: Run) -> TransferModel | None:
    """After an epoch: the weights that beat the best so far (the trained ones, or the EMA's when they did
    better still), with the state updated; None when neither did."""
    record, state = run.state.history[-1], run.state
    acc, loss, model = record["val_acc"], record["val_loss"], run.model
    if run.ema is not None and better(record["ema_val_acc"], record["ema_val_loss"], acc, loss):
        acc, loss, model = record["ema_val_acc"], record["ema_val_loss"], run.ema.model
    if not better(acc, loss, state.best_val_acc, state.best_val_loss):
        return None
    state.best_val_acc, state.best_val_loss, state.best_epoch = acc, loss, state.epoch
    state.best_is_ema = model is not run.model
    return model


def early_stop(state: TrainState, patience: int | None) -> str:
    """Why the run ends now (--patience epochs without a better val score), or "" to go on."""
    if patience is None or state.epoch - state.best_epoch < patience:
        return ""
    return (f"early stopping: no better val accuracy (or val loss at the same accuracy) in the {patience} "
            f"epoch(s) after epoch {state.best_epoch}")


def keep_checkpoints(run: Run, out: Path, writes: bool,
                     improved: TransferModel | None) -> dict[str, torch.Tensor] | None:
    """After an epoch: best.pt from the `improved` weights if any (returned, kept in memory too), last.pt and
    metrics.csv always. Under torchrun rank 0 alone writes."""
    best = None
    if improved is not None:
        best = {k: v.detach().clone() for k, v in improved.state_dict().items()}
        if writes:
            run.save(out / "best.pt", with_optimizer=False, model=improved)
    if writes:
        run.save(out / "last.pt", with_optimizer=True)
    if run.world.main:
        write_metrics_csv(out / "metrics.csv", run.state.history)
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
        while (run.state.epoch < run.config.epochs and not run.state.ended
               and not distributed.any_rank(stop.requested, run.device, run.world)):
            record = run_epoch(run, events, stop, generator)
            if record is None:
                break
            improved = update_best(run)
            run.state.ended = early_stop(run.state, run.config.patience)
            best_state = keep_checkpoints(run, out, writes, improved) or best_state
            events.epoch(record)
            if run.state.ended:
                events.note(run.state.ended)
        # a signal stopped it, mid-epoch or between epochs
        interrupted = run.state.epoch < run.config.epochs and not run.state.ended
        if interrupted and writes:
            run.save(out / "last.pt", with_optimizer=True)
            events.note(f"interrupted: saved {out / 'last.pt'}; continue with `catdog train --resume {out}`")
    if best_state is None and save_checkpoints and (out / "best.pt").exists():  # resumed after the best epoch
        best_state = checkpoints.load(out / "best.pt")["state_dict"]  # on every rank: all evaluate it together
    result = summarize(run, out, best_state, interrupted, final_splits)
    if writes and "calibration" in result:  # best.pt carries the temperature evaluate, predict and export use
        checkpoints.update(out / "best.pt", calibration=calibration.checkpoint_entry(result["calibration"]))
    recipe = recipe_record(run, interrupted)
    if writes:  # a train run (compare's cells have one report for the grid)
        result["report"] = str(report_module.write_train_report({**result, **recipe}, out / "report.html"))
    result["split"] = split_summary(run.split)  # last: the keys before it keep their places
    result |= recipe  # after the keys scripts already read: those keep their places
    if run.world.main:
        atomic_write_text(out / "run.json", to_json(result))
    return result


def recipe_record(run: Run, interrupted: bool) -> dict[str, Any]:
    """How the run ended, which weights are best.pt, and the training images per class."""
    state, classes = run.state, run.dataset.classes
    return {"ended": "interrupted" if interrupted else state.ended or f"completed all {run.config.epochs} epochs",
            "best_weights": "ema" if state.best_is_ema else "trained",
            "train_counts": dict(zip(classes, class_counts(run.dataset.splits["train"].labels, len(classes))))}


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
    which = f"best (epoch {state.best_epoch}{', EMA weights' if state.best_is_ema else ''})"
    for name, source in (("val", run.sources.val), ("test", run.sources.test)):
        if source is None or name not in final_splits:
            continue
        net, inputs = run.evaluable(run.model) if name == "val" else (run.model, run.inputs)
        ev = evaluate(net, source, inputs, run.precision, len(classes), world=run.world)
        result["evaluation" if name == "val" else "test"] = {**evaluation_record(ev, classes, name),
                                                              "checkpoint": which}
        if name == "val":  # each rank names its shard's worst; rank 0 keeps the worst overall
            result["calibration"] = calibration.calibrate(ev.logits, ev.labels, run.world)
            ev.confidence = calibration.confidence(ev.logits, result["calibration"]["temperature"])  # as predict
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
