"""The one engine under train, evaluate, predict and compare.

A run is: find the data, build the model, pick the strategy's parameter groups, decode images once, then
epochs of (augment on the device -> forward in mixed precision -> step) with evaluation on the val split.
The CLI only renders what this module reports through `Events`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from catdog_cli import checkpoints, distributed
from catdog_cli import report as report_module
from catdog_cli.augment import normalize, train_transform
from catdog_cli.backbones import DEFAULT_BACKBONE, TransferModel, build_model, count_params, preprocessing
from catdog_cli.data import (
    Dataset,
    ImageBatch,
    ImageSpec,
    Split,
    decode_split,
    default_workers,
    list_images,
    load_dataset,
    resolve_data,
    shard,
)
from catdog_cli.distributed import World
from catdog_cli.errors import CatdogError
from catdog_cli.events import Events
from catdog_cli.metrics import confusion_matrix, per_class
from catdog_cli.paths import atomic_write_text, check_out_dir, claim_out_dir
from catdog_cli.pipeline import DecodeCache, ResidentSource, StreamingSource, batches, memory_budget
from catdog_cli.strategies import param_groups


@dataclass
class TrainConfig:
    data: str
    backbone: str = DEFAULT_BACKBONE
    strategy: str = "finetune"
    epochs: int = 10
    batch_size: int | None = None  # 32 on CPU, 64 on CUDA
    lr: float | None = None  # per strategy, see strategies.DEFAULT_LR
    lr_ratio: float = 10.0
    image_size: int | None = None  # the weights' crop size (224 for most)
    weights: str = "default"
    device: str = "auto"
    seed: int = 0
    val_split: float = 0.2
    augment: bool = True
    compile: bool = False
    cache_gib: float | None = None
    workers: int | None = None
    weight_decay: float = 0.01


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CatdogError("--device cuda: no CUDA GPU is visible to PyTorch (use --device cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise CatdogError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None


class Precision:
    """bf16 autocast where the GPU supports it, fp16 with loss scaling otherwise, fp32 on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.dtype = None
        if device.type == "cuda":
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else nullcontext()

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")


def warmup_cosine(total_steps: int, warmup: int) -> Any:
    """LR multiplier: linear warm-up, then cosine decay to zero."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


class StopRequest:
    """SIGINT/SIGTERM during training: finish the current step, save, and leave cleanly."""

    def __init__(self):
        self.requested = False

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        def handler(signum, frame):
            if self.requested:  # a second Ctrl-C means now
                raise KeyboardInterrupt
            self.requested = True

        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for s in previous:
                signal.signal(s, handler)
        except ValueError:  # not the main thread: signals stay with whoever owns them
            previous = {}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


# --- data -> device batches -----------------------------------------------------------------------------


@dataclass
class Inputs:
    """How a model wants its pixels: the eval crop and resize, and the weights' normalization."""

    image_size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def for_backbone(cls, backbone: str, image_size: int | None) -> Inputs:
        pre = preprocessing(backbone)
        size = image_size or pre.crop_size
        return cls(size, pre.resize_for(size), pre.mean, pre.std)

    def eval_spec(self) -> ImageSpec:
        return ImageSpec(train=False, resize=self.resize, crop=self.image_size)

    def train_spec(self, augment: bool) -> ImageSpec:
        """Random crops do not depend on the weights' resize ratio: one decode serves every backbone."""
        if not augment:
            return self.eval_spec()
        return ImageSpec(train=True, resize=round(self.image_size * 256 / 224), crop=self.image_size)

    def model_input(self, batch: ImageBatch, generator: torch.Generator | None = None) -> torch.Tensor:
        if batch.sizes is None:
            return normalize(batch.images, self.mean, self.std)
        return train_transform(batch.images, batch.sizes, batch.transposed, self.image_size, self.mean, self.std,
                               generator)


@dataclass
class DataSources:
    """This process's batch sources and the splits behind them (under torchrun: this rank's shard of each)."""

    train: Any
    val: Any
    test: Any | None
    splits: dict[str, Split]
    decode_skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def skipped(self) -> list[tuple[Path, str]]:
        """Files left out: found while decoding up front, or while streaming."""
        streamed = [item for source in (self.train, self.val, self.test) if isinstance(source, StreamingSource)
                    for item in source.skipped.items()]
        return self.decode_skipped + streamed


def open_sources(dataset: Dataset, inputs: Inputs, device: torch.device, batch_size: int, seed: int,
                 augment: bool, cache: DecodeCache, budget: int, workers: int | None, events: Events,
                 world: World = World()) -> DataSources:
    """Decode train, val (and test) once into the cache, or set up streaming when over the budget."""
    found, splits = {}, {}
    skipped: list[tuple[Path, str]] = []

    def note_skip(path: Path, reason: str) -> None:
        events.note(f"skipped {path}: {reason}")

    for name in ("train", "val", "test"):
        if name not in dataset.splits or not len(dataset.splits[name]):
            found[name] = None
            continue
        split = dataset.splits[name]
        if world.distributed:
            split = shard(split, world.rank, world.size, seed, equal=name == "train")
        splits[name] = split
        spec = inputs.train_spec(augment) if name == "train" else inputs.eval_spec()
        events.task(f"decoding {name}", len(split))
        source, decoded = batches(split, spec, batch_size, shuffle=name == "train", device=device, cache=cache,
                                  budget=budget, seed=seed, workers=workers, on_image=events.advance,
                                  on_skip=note_skip)
        if decoded.streamed:
            events.note(f"{name}: {len(split)} images are over the memory budget; decoding per batch instead")
        for path, reason in decoded.skipped:
            note_skip(path, reason)
        skipped += decoded.skipped
        found[name] = source
    if found["train"] is None:
        raise CatdogError(f"no usable training images in {dataset.root}")
    if found["val"] is None:
        raise CatdogError(f"no usable validation images in {dataset.root} (add a val/ folder or use --val-split)")
    return DataSources(found["train"], found["val"], found["test"], splits, skipped)


# --- train and evaluate loops ---------------------------------------------------------------------------


@dataclass
class EvalOutput:
    loss: float
    accuracy: float
    confusion: list[list[int]]
    num_images: int
    losses: torch.Tensor  # per image, in split order (CPU)
    preds: torch.Tensor
    confidence: torch.Tensor
    index: torch.Tensor


def evaluate(model: TransferModel, source: Any, inputs: Inputs, precision: Precision, num_classes: int,
             events: Events | None = None, world: World = World()) -> EvalOutput:
    model.eval()
    losses, preds, confs, labels, index = [], [], [], [], []
    with torch.inference_mode():
        for batch in source:
            with precision.autocast():
                logits = model(inputs.model_input(batch))
            logits = logits.float()
            losses.append(F.cross_entropy(logits, batch.labels, reduction="none"))
            conf, pred = logits.softmax(1).max(1)
            preds.append(pred)
            confs.append(conf)
            labels.append(batch.labels)
            index.append(batch.index)
            if events:
                events.advance(len(batch))
    if not losses:  # every file of a streamed split was unreadable
        raise CatdogError("no readable images to evaluate")
    loss, pred, label = torch.cat(losses), torch.cat(preds), torch.cat(labels)
    # under torchrun each rank saw its shard: sums over ranks give the whole split's numbers
    confusion = distributed.all_sum(confusion_matrix(label, pred, num_classes), world)
    loss_sum = distributed.all_sum(loss.double().sum(), world)
    n = int(confusion.sum())
    return EvalOutput(loss_sum.item() / n, confusion.diagonal().sum().item() / n, confusion.tolist(), n,
                      loss.cpu(), pred.cpu(), torch.cat(confs).cpu(), torch.cat(index).cpu())


def evaluation_record(out: EvalOutput, classes: list[str], split: str) -> dict[str, Any]:
    return {"split": split, "num_images": out.num_images, "accuracy": out.accuracy, "loss": out.loss,
            "per_class": per_class(out.confusion, classes), "confusion": out.confusion}


TOP_LOSSES = 12


def top_losses(out: EvalOutput, split: Split, classes: list[str], k: int = TOP_LOSSES) -> list[dict[str, Any]]:
    """The most confidently wrong images: what a person should look at first."""
    wrong = (out.preds != torch.tensor([split.labels[i] for i in out.index.tolist()])).nonzero().flatten()
    order = wrong[out.losses[wrong].argsort(descending=True)][:k]
    return [{"path": str(split.paths[out.index[i]]), "true": classes[split.labels[out.index[i]]],
             "pred": classes[out.preds[i]], "confidence": out.confidence[i].item(), "loss": out.losses[i].item()}
            for i in order.tolist()]


@dataclass
class TrainState:
    """Everything a resumed run needs besides the config."""

    epoch: int = 0  # epochs completed
    step: int = 0  # steps done inside the epoch in progress (after an interruption)
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_acc: float = -1.0
    best_epoch: int = 0


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buffer.getvalue())


def default_batch_size(device: torch.device) -> int:
    return 64 if device.type == "cuda" else 32


@dataclass
class Run:
    """A training run in the making: the pieces `fit` and `compare` share."""

    config: TrainConfig
    dataset: Dataset
    device: torch.device
    inputs: Inputs
    model: TransferModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    precision: Precision
    sources: DataSources
    steps: int  # per epoch; under torchrun the same on every rank
    world: World = field(default_factory=World)
    state: TrainState = field(default_factory=TrainState)
    head_only: bool = False  # train batches are cached backbone features (freeze without augmentation)

    def meta(self) -> dict[str, Any]:
        c = self.config
        return {"backbone": c.backbone, "classes": self.dataset.classes, "image_size": self.inputs.image_size,
                "resize": self.inputs.resize, "mean": list(self.inputs.mean), "std": list(self.inputs.std),
                "strategy": c.strategy, "config": asdict(c), "data": str(self.dataset.root.resolve()),
                "split_origin": self.dataset.origin}

    def save(self, path: Path, with_optimizer: bool) -> None:
        meta = {**self.meta(), "state": asdict(self.state)}
        if with_optimizer:
            meta |= {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "scaler": self.precision.scaler.state_dict()}
        checkpoints.save(path, self.model, meta)


def start_run(config: TrainConfig, events: Events, cache: DecodeCache | None = None,
              dataset: Dataset | None = None, model: TransferModel | None = None, world: World | None = None) -> Run:
    """Data, model, optimizer; `model` may be prebuilt (compare copies one per strategy).

    `world`: under torchrun (the default when launched by it) each rank trains on its shard of the data.
    """
    world = distributed.world() if world is None else world
    device = resolve_device(distributed.device_for(config.device, world))
    if config.epochs < 1:
        raise CatdogError("--epochs must be at least 1")
    batch_size = default_batch_size(device) if config.batch_size is None else config.batch_size
    if batch_size < 1:
        raise CatdogError("--batch-size must be at least 1")
    config.batch_size = batch_size
    dataset = dataset or load_dataset(config.data, config.val_split, config.seed)
    for note in dataset.notes:
        events.note(note)
    inputs = Inputs.for_backbone(config.backbone, config.image_size)
    if model is None:
        model = build_model(config.backbone, len(dataset.classes), config.weights, device, seed=config.seed)
    groups = param_groups(config.strategy, model, config.lr, config.lr_ratio)
    config.lr, config.image_size = groups[-1]["lr"], inputs.image_size  # record what the run really uses
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # input shapes are fixed (full batches), so autotuning pays off
    cache, budget = cache or DecodeCache(), memory_budget(device, config.cache_gib)
    sources = open_sources(dataset, inputs, device, batch_size, config.seed, config.augment, cache, budget,
                           config.workers, events, world)
    features = None
    if model.frozen and not config.augment:  # the same pixels every epoch: run the backbone once, train the head
        features = feature_source(model, sources.splits["train"], inputs, device, batch_size, config.seed, cache,
                                  budget, config.workers, events)
        sources.train = features or sources.train
    steps = distributed.all_min(len(sources.train), device, world)
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    total = config.epochs * steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, min(100, max(1, total // 20))))
    return Run(config, dataset, device, inputs, model, optimizer, scheduler, Precision(device), sources, steps, world,
               head_only=features is not None)


def feature_source(model: TransferModel, split: Split, inputs: Inputs, device: torch.device, batch_size: int,
                   seed: int, cache: DecodeCache, budget: int, workers: int | None,
                   events: Events) -> ResidentSource | None:
    """The frozen backbone's features of every training image, computed once and batched like images;
    None when they would not fit the memory budget (a feature map rather than a vector, a huge dataset)."""
    images, _ = batches(split, inputs.eval_spec(), batch_size, shuffle=False, device=device, cache=cache,
                        budget=budget, workers=workers)  # without augmentation: the decode already cached
    precision = Precision(device)
    model.eval()
    parts: list[ImageBatch] = []
    events.task("backbone features (once)", len(split))
    with torch.inference_mode():
        for batch in images:
            with precision.autocast():
                features = model.features(inputs.model_input(batch))
            if isinstance(features, tuple):
                features = features[0]
            if not parts and features[0].numel() * 4 * len(split) > budget:
                events.note("backbone features are over the memory budget; running the backbone every step")
                return None
            parts.append(ImageBatch(features.float().clone(), batch.labels, batch.index))
            events.advance(len(batch))
    cat = ImageBatch(*(torch.cat([getattr(p, f) for p in parts]) for f in ("images", "labels", "index")))
    return ResidentSource(cat, batch_size, shuffle=True, seed=seed)


def train_epoch(run: Run, events: Events, stop: StopRequest, generator: torch.Generator,
                forward: Any = None) -> dict[str, float] | None:
    """One pass over train; None if a stop was requested (the run's state then says where it stopped)."""
    model, opt = run.model, run.optimizer
    forward = forward or model
    model.train()
    epoch = run.state.epoch
    run.sources.train.set_epoch(epoch)  # shuffle and augmentation depend on (seed, epoch, rank) only
    generator.manual_seed(run.config.seed * 1_000_003 + epoch * 1_009 + run.world.rank)
    loss_sum = torch.zeros((), device=run.device)
    correct = torch.zeros((), device=run.device, dtype=torch.int64)
    seen = 0
    events.task(f"epoch {epoch + 1}/{run.config.epochs}", run.steps)
    for i, batch in zip(range(run.steps), run.sources.train):
        if i < run.state.step:  # resuming inside an epoch: these steps were already taken
            events.advance(1)
            continue
        x = batch.images if run.head_only else run.inputs.model_input(batch, generator)
        with run.precision.autocast():
            logits = forward(x)
            loss = F.cross_entropy(logits.float(), batch.labels)
        opt.zero_grad(set_to_none=True)
        run.precision.scaler.scale(loss).backward()
        run.precision.scaler.step(opt)
        run.precision.scaler.update()
        run.scheduler.step()
        n = len(batch)
        loss_sum += loss.detach() * n
        correct += (logits.argmax(1) == batch.labels).sum()
        seen += n
        run.state.step = i + 1
        if (i + 1) % 25 == 0:  # a host sync now and then, for the live numbers
            events.advance(1, loss=loss_sum.item() / seen, acc=correct.item() / seen)
        else:
            events.advance(1)
        if distributed.any_rank(stop.requested, run.device, run.world):  # every rank stops after the same step
            stop.requested = True
            return None
    run.state.step = 0
    totals = distributed.all_sum(torch.stack([loss_sum.double(), correct.double(),
                                              torch.tensor(seen, dtype=torch.float64, device=run.device)]), run.world)
    n = max(1.0, totals[2].item())
    return {"train_loss": totals[0].item() / n, "train_acc": totals[1].item() / n, "images": int(totals[2].item())}


def fit(config: TrainConfig, out: Path | str | None = None, events: Events | None = None,
        cache: DecodeCache | None = None) -> dict[str, Any]:
    """Train, keeping best.pt (best val accuracy) and last.pt, and return the run record (run.json)."""
    world = distributed.world()
    events = events if events is not None and world.main else Events()
    check_out_dir(out)
    run = start_run(config, events, cache, world=world)
    out = distributed.broadcast(claim_out_dir(out, "train") if world.main else None, world)
    return train_loop(run, out, events)


RELOCATABLE = ("device", "workers", "cache_gib", "compile")  # where a run trains, not what: may change on resume


def resumed_config(ckpt: dict[str, Any], given: dict[str, Any]) -> TrainConfig:
    """The interrupted run's own config. Options typed again must agree with it, except the RELOCATABLE ones."""
    saved = {**ckpt["config"], "data": ckpt["data"]}
    for name, value in given.items():
        if name in RELOCATABLE:
            continue
        if (str(resolve_data(value).resolve()) if name == "data" else value) != saved[name]:
            allowed = ", ".join("--" + o.replace("_", "-") for o in RELOCATABLE)
            was = "default" if saved[name] is None else saved[name]
            raise CatdogError(f"--{name.replace('_', '-')} {value} differs from the run being resumed ({was}); "
                              f"a resumed run keeps its options (only {allowed} may change)")
    return TrainConfig(**{**saved, **{k: v for k, v in given.items() if k in RELOCATABLE}})


def resume(out: Path | str, given: dict[str, Any] | None = None, events: Events | None = None) -> dict[str, Any]:
    """Continue an interrupted run in its own folder from last.pt, with its optimizer, scheduler and scaler state.

    `given`: the TrainConfig fields the user typed. A changed option, or data whose classes changed, is refused
    before anything is decoded or trained.
    """
    events = events if events is not None and distributed.world().main else Events()
    out = Path(out)
    if not (out / "last.pt").is_file():
        raise CatdogError(f"nothing to resume in {out}: it has no last.pt")
    ckpt = checkpoints.load(out / "last.pt")
    if any(k not in ckpt for k in ("optimizer", "scheduler", "scaler", "state", "config", "data")):
        raise CatdogError(f"{out / 'last.pt'} holds no training state to resume from; it is not a run's last.pt")
    config = resumed_config(ckpt, given or {})
    state = TrainState(**ckpt["state"])
    if state.epoch >= config.epochs:
        raise CatdogError(f"{out} already ran all {config.epochs} epoch(s); nothing to resume")
    dataset = load_dataset(config.data, config.val_split, config.seed)
    if dataset.classes != ckpt["classes"]:
        raise CatdogError(f"the classes in {dataset.root} changed since the run started (now "
                          f"{', '.join(dataset.classes)}; then {', '.join(ckpt['classes'])}); start a new run instead")
    model = checkpoints.restore_model(ckpt, resolve_device(config.device))
    run = start_run(config, events, dataset=dataset, model=model)
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt["scaler"]:  # empty when it was saved without fp16 loss scaling (CPU, bf16)
        run.precision.scaler.load_state_dict(ckpt["scaler"])
    run.state = state
    for stale in out.glob(".*.pt.*.tmp"):  # a checkpoint write cut short by kill -9
        stale.unlink(missing_ok=True)
    events.note(f"resuming {out} at epoch {state.epoch + 1}/{config.epochs}, step {state.step}")
    return train_loop(run, out, events)


def train_loop(run: Run, out: Path, events: Events, save_checkpoints: bool = True,
               final_splits: tuple[str, ...] = ("val", "test")) -> dict[str, Any]:
    """Epochs until done or stopped. The best weights are also kept in memory, for the final evaluation on
    `final_splits` and for compare, which writes no per-cell checkpoints and needs only the test split."""
    config, state = run.config, run.state
    writes = save_checkpoints and run.world.main  # under torchrun rank 0 alone writes
    best_state = None
    forward = run.model.head if run.head_only else run.model
    if run.world.distributed:  # gradients averaged over ranks; rank 0's initial weights broadcast to all
        device_ids = [run.device.index] if run.device.type == "cuda" else None
        forward = DistributedDataParallel(forward, device_ids=device_ids)
    if config.compile:
        forward = torch.compile(forward)
    generator = torch.Generator(device=run.device)
    stop = StopRequest()
    with stop.installed():
        while state.epoch < config.epochs and not distributed.any_rank(stop.requested, run.device, run.world):
            start = time.perf_counter()
            train = train_epoch(run, events, stop, generator, forward)
            if train is None:
                break
            seconds = time.perf_counter() - start
            distributed.sync_buffers(run.model, run.world)  # all ranks evaluate and end with rank 0's BN stats
            events.task(f"val {state.epoch + 1}/{config.epochs}", len(run.sources.splits["val"]))
            val = evaluate(run.model, run.sources.val, run.inputs, run.precision, len(run.dataset.classes), events,
                           run.world)
            state.epoch += 1
            record = {"epoch": state.epoch, "train_loss": train["train_loss"], "train_acc": train["train_acc"],
                      "val_loss": val.loss, "val_acc": val.accuracy, "lr": run.optimizer.param_groups[-1]["lr"],
                      "seconds": seconds, "images_per_sec": train["images"] / seconds}
            state.history.append(record)
            if val.accuracy > state.best_val_acc:
                state.best_val_acc, state.best_epoch = val.accuracy, state.epoch
                best_state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
                if writes:
                    run.save(out / "best.pt", with_optimizer=False)
            if writes:
                run.save(out / "last.pt", with_optimizer=True)
            if run.world.main:
                write_metrics_csv(out / "metrics.csv", state.history)
            events.epoch(record)
        interrupted = state.epoch < config.epochs  # a signal stopped it, mid-epoch or between epochs
        if interrupted and writes:
            run.save(out / "last.pt", with_optimizer=True)
            events.note(f"interrupted: saved {out / 'last.pt'}; continue with `catdog train --resume {out}`")
    if best_state is None and save_checkpoints and (out / "best.pt").exists():  # resumed after the best epoch
        best_state = checkpoints.load(out / "best.pt")["state_dict"]  # on every rank: all evaluate it together
    result = summarize(run, out, best_state, interrupted, final_splits)
    if run.world.main:
        if writes:  # a train run (compare's cells have one report for the grid)
            result["report"] = str(report_module.write_train_report(result, out / "report.html"))
        atomic_write_text(out / "run.json", json.dumps(result, indent=2))
    return result


def summarize(run: Run, out: Path, best_state: dict[str, torch.Tensor] | None, interrupted: bool,
              final_splits: tuple[str, ...] = ("val", "test")) -> dict[str, Any]:
    """Evaluate the best weights on val (and test), with the top losses: the numbers a person decides from."""
    classes, state = run.dataset.classes, run.state
    total, trainable = count_params(run.model)
    skipped = {p for p, _ in run.sources.skipped}
    result: dict[str, Any] = {
        "kind": "train", "config": asdict(run.config), "versions": checkpoints.versions(),
        "device": str(run.device), "precision": run.precision.name, "classes": classes,
        "split_origin": run.dataset.origin, "params": {"total": total, "trainable": trainable},
        "history": state.history, "epochs": state.epoch, "best_epoch": state.best_epoch,
        "best_val_acc": state.best_val_acc if state.history else None, "interrupted": interrupted,
        "skipped": [{"path": str(p), "reason": r} for p, r in run.sources.skipped], "out": str(out),
        "images": {name: sum(p not in skipped for p in split.paths) for name, split in run.dataset.splits.items()},
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
    return result


# --- using a trained model ------------------------------------------------------------------------------


def _loaded(checkpoint: Path | str, device: str) -> tuple[dict[str, Any], TransferModel, Inputs, torch.device]:
    ckpt = checkpoints.load(checkpoint)
    dev = resolve_device(device)
    model = checkpoints.restore_model(ckpt, dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    inputs = Inputs(ckpt["image_size"], ckpt["resize"], tuple(ckpt["mean"]), tuple(ckpt["std"]))
    return ckpt, model, inputs, dev


def evaluate_checkpoint(checkpoint: Path | str, data: str | None = None, split: str = "val",
                        batch_size: int | None = None, device: str = "auto", events: Events | None = None,
                        workers: int | None = None, report: Path | str | None = None) -> dict[str, Any]:
    """Accuracy, loss, per-class metrics and confusion of a saved model on one split of a dataset.

    A folder without split folders is evaluated whole, unless it is the folder the model was trained on: then
    its val split is re-derived exactly as in training, so training images never count as validation.
    """
    events = events or Events()
    ckpt, model, inputs, dev = _loaded(checkpoint, device)
    data = data or ckpt["data"]
    config = ckpt["config"]
    trained_here = str(resolve_data(data).resolve()) == ckpt["data"]
    val_split = config["val_split"] if trained_here else None
    dataset = load_dataset(data, val_split, config["seed"], classes=ckpt["classes"])
    for note in dataset.notes:
        events.note(note)
    if split != "all" and "all" in dataset.splits:
        events.note(f"{dataset.root} has no split folders: evaluating all of it")
        split = "all"
    images = dataset.split(split)
    events.task(f"decoding {split}", len(images))

    def note_skip(path: Path, reason: str) -> None:
        events.note(f"skipped {path}: {reason}")

    # the same sources as training: resident when the split fits the memory budget, else decoded per batch
    source, decoded = batches(images, inputs.eval_spec(), batch_size or default_batch_size(dev), shuffle=False,
                              device=dev, cache=DecodeCache(), budget=memory_budget(dev), workers=workers,
                              on_image=events.advance, on_skip=note_skip)
    for path, reason in decoded.skipped:
        note_skip(path, reason)
    if source is None:
        raise CatdogError(f"no readable images in the {split} split of {dataset.root}")
    events.task(f"evaluating {split}", len(images))
    out = evaluate(model, source, inputs, Precision(dev), len(ckpt["classes"]), events)
    skipped = decoded.skipped + (list(source.skipped.items()) if isinstance(source, StreamingSource) else [])
    record = evaluation_record(out, ckpt["classes"], split)
    result = {"kind": "evaluate", "checkpoint": str(checkpoint), "data": str(dataset.root), "classes": ckpt["classes"],
              "backbone": ckpt["backbone"], "params": dict(zip(("total", "trainable"), count_params(model))),
              "config": config, "versions": checkpoints.versions(), **record,
              "evaluation": {**record, "checkpoint": str(checkpoint)},
              "top_losses": top_losses(out, images, ckpt["classes"]),
              "skipped": [{"path": str(p), "reason": r} for p, r in skipped]}
    if report is not None:
        result["report"] = str(report_module.write_train_report(result, Path(report)))
    return result


def collect_images(paths: list[Path | str]) -> list[Path]:
    """Files as given; folders recursed for image files."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += list_images(p)[0]
        elif p.exists():
            found.append(p)
        else:
            raise CatdogError(f"no such file or folder: {p}")
    return found


def predict(checkpoint: Path | str, paths: list[Path | str], top_k: int = 1, batch_size: int | None = None,
            device: str = "auto", events: Events | None = None, workers: int | None = None) -> list[dict[str, Any]]:
    """One row per image: label and confidence (and the top k), or the reason it could not be read."""
    events = events or Events()
    ckpt, model, inputs, dev = _loaded(checkpoint, device)
    classes = ckpt["classes"]
    files = collect_images(paths)
    if not files:
        raise CatdogError("no images to classify in " + ", ".join(map(str, paths)))
    batch_size = batch_size or default_batch_size(dev)
    k = max(1, min(top_k, len(classes)))
    rows: list[dict[str, Any]] = []
    events.task("classifying", len(files))
    precision = Precision(dev)
    for start in range(0, len(files), batch_size * 4):  # decode a few batches at a time: bounded memory
        chunk = Split(files[start : start + batch_size * 4], [0] * len(files[start : start + batch_size * 4]))
        decoded, skipped = decode_split(chunk, inputs.eval_spec(), workers or default_workers())
        rows += [{"path": str(p), "error": reason} for p, reason in skipped]
        if decoded is None:
            continue
        for batch in ResidentSource(decoded.to(dev), batch_size, shuffle=False):
            with torch.inference_mode(), precision.autocast():
                probs = model(inputs.model_input(batch)).float().softmax(1)
            conf, idx = probs.topk(k, dim=1)
            for i, c, j in zip(batch.index.tolist(), conf.tolist(), idx.tolist()):
                row = {"path": str(chunk.paths[i]), "label": classes[j[0]], "confidence": c[0]}
                if top_k > 1:
                    row["top"] = [{"label": classes[a], "confidence": b} for a, b in zip(j, c)]
                rows.append(row)
            events.advance(len(batch))
        events.advance(len(skipped))
    order = {str(p): n for n, p in enumerate(files)}
    return sorted(rows, key=lambda r: order[r["path"]])


def write_predictions_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """A new file only: an existing one is the user's and stays as it is."""
    try:
        with open(path, "x", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "confidence", "error"])
            for r in rows:
                writer.writerow([r["path"], r.get("label", ""), r.get("confidence", ""), r.get("error", "")])
    except FileExistsError:
        raise CatdogError(f"{path} already exists; choose a new --csv file") from None


def copy_new(src: Path, folder: Path) -> Path:
    """Copy to folder/NAME, or NAME-1, NAME-2, ... when taken: mode 'x' never replaces a file, even in a race."""
    n = 0
    with open(src, "rb") as f:
        while True:
            target = folder / (src.name if n == 0 else f"{src.stem}-{n}{src.suffix}")
            try:
                with open(target, "xb") as dst:
                    shutil.copyfileobj(f, dst)
            except FileExistsError:
                n += 1
                continue
            shutil.copystat(src, target)
            return target


def sort_into_folders(rows: list[dict[str, Any]], dest: Path | str) -> int:
    """Copy each classified image into dest/<label>/ (row["copied_to"]); the originals are only read.

    Labels come from the checkpoint, which may not be ours: one that is not a plain folder name is refused.
    """
    dest = Path(dest)
    labels = {r["label"] for r in rows if "label" in r}
    for label in labels:
        if label in ("", ".", "..") or Path(label).name != label or "\\" in label:
            raise CatdogError(f"class name {label!r} is not a safe folder name; refusing to sort into {dest}")
    if dest.exists() and not dest.is_dir():
        raise CatdogError(f"--sort-into {dest} is a file, not a folder")
    for row in rows:
        if "label" not in row:
            continue
        folder = dest / row["label"]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            row["copied_to"] = str(copy_new(Path(row["path"]), folder))
        except OSError as exc:
            raise CatdogError(f"could not copy {row['path']} into {folder}: {exc.strerror or exc}") from None
    return sum("copied_to" in r for r in rows)
