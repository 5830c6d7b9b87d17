"""A run's setup: data, model, strategy's parameter groups, optimizer, loss, decided once in `start_run`.

`Run` holds what the loop needs; nothing in the loop asks which strategy or source it has.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from catdog_cli.checks.duplicates import cross_split_note
from catdog_cli.core.config import TrainConfig
from catdog_cli.core.defaults import STRATEGIES
from catdog_cli.core.events import Events
from catdog_cli.core.records import EpochRecord, RunSummary
from catdog_cli.core.world import World
from catdog_cli.data.augment import Mixing
from catdog_cli.data.balance import class_counts, imbalance_note, inverse_frequency
from catdog_cli.data.dataset import Dataset, no_val_reason, split_record
from catdog_cli.data.presets import Preprocess, Preset
from catdog_cli.data.sources import DataSources, DecodeCache, Loader, memory_budget, open_sources
from catdog_cli.errors import CatdogError
from catdog_cli.models import checkpoints, warm_start
from catdog_cli.models.backbones import check_image_size, preset_for
from catdog_cli.models.strategies import param_groups
from catdog_cli.models.transfer import TransferModel, count_params
from catdog_cli.runtime import distributed
from catdog_cli.runtime.device import Precision, check_compile, default_batch_size, resolve_device
from catdog_cli.training.ema import EMA
from catdog_cli.training.features import CachedFeatures, FrozenBackbone, cache_features
from catdog_cli.training.schedule import lr_factor, lr_schedule


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
    preset: Preset
    model: TransferModel
    forward: nn.Module
    preprocess: Preprocess
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    precision: Precision
    sources: DataSources
    steps: int  # per epoch; under torchrun the same on every rank
    loader: Loader  # how the sources batch (a pass over a split after training batches as they do)
    criterion: nn.Module = field(default_factory=nn.CrossEntropyLoss)
    mixing: Mixing | None = None
    ema: EMA | None = None
    val_features: bool = False
    world: World = field(default_factory=World)
    state: TrainState = field(default_factory=TrainState)

    def meta(self) -> dict[str, Any]:
        c = self.config
        return {
            "backbone": c.backbone,
            "classes": self.dataset.classes,
            **self.preset.checkpoint_fields(),
            "strategy": c.strategy,
            "config": asdict(c),
            "data": str(self.dataset.root.resolve()),
            "split_origin": self.dataset.origin,
            "split": self.split,
        }

    @functools.cached_property
    def split(self) -> dict[str, Any]:
        """The files this run trains and validates on (recorded in every checkpoint; made once, not per save)."""
        return split_record(self.dataset)

    def save(self, path: Path, with_optimizer: bool, model: TransferModel | None = None) -> None:
        """`model`: other weights of this run's model to save (the EMA's), by default the trained ones."""
        meta = {**self.meta(), "state": asdict(self.state)}
        if with_optimizer:
            meta |= {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.precision.scaler.state_dict(),
            }
            if self.ema is not None:
                meta["ema"] = self.ema.state_dict()
        checkpoints.save(path, model or self.model, meta)

    def evaluable(self, model: TransferModel) -> tuple[nn.Module, Preset | CachedFeatures]:
        """What evaluates `model` on the val source: its head on cached features, or the model on images."""
        return (model.head, CachedFeatures()) if self.val_features else (model, self.preset)


def wrap(forward: nn.Module, config: TrainConfig, device: torch.device, world: World) -> nn.Module:
    """DDP averages gradients over ranks (and starts every rank from rank 0's weights); --compile compiles."""
    if world.distributed:
        forward = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        check_compile()
        forward = torch.compile(forward)
    return forward


def class_weights(config: TrainConfig, dataset: Dataset, events: Events) -> list[float] | None:
    """Notes an imbalance of the training classes; the inverse-frequency weights the sampler draws by (--balance)."""
    counts = class_counts(dataset.splits["train"].labels, len(dataset.classes))
    note = imbalance_note(dataset.classes, counts)
    if note:
        events.note(f"{note}: --balance is on" if config.balance else note)
    return inverse_frequency(counts) if config.balance else None


def run_summary(
    config: TrainConfig,
    dataset: Dataset,
    device: torch.device,
    out: Path | str | None,
    model: TransferModel | None = None,
) -> RunSummary:
    """What a run is about to do, for Events.summary (compare puts its grid over a cell's)."""
    params = {}
    if model is not None:
        total, trainable = count_params(model)
        params[config.backbone] = {"total": total, "trainable": trainable}
    return {
        "kind": "train",
        "data": str(dataset.root),
        "classes": dataset.classes,
        "images": {name: len(split) for name, split in dataset.splits.items()},
        "split_origin": dataset.origin,
        "backbones": [config.backbone],
        "strategies": [config.strategy],
        "weights": {config.backbone: config.weights},
        "params": params,
        "lr": config.lr,
        "epochs": config.epochs,
        "batch_size": config.batch_size or default_batch_size(device),
        "image_size": config.image_size,
        "augment": config.augment,
        "device": str(device),
        "precision": Precision(device, config.precision).name,
        "out": str(out) if out is not None else "not saved",
        "recipe": config.recipe(),
    }


def start_run(
    config: TrainConfig,
    dataset: Dataset,
    events: Events,
    cache: DecodeCache | None = None,
    model: TransferModel | None = None,
    world: World | None = None,
    out: Path | str | None = None,
) -> Run:
    """Data, model, optimizer, loss, for a config its entry point checked and the dataset it loaded; `model` may be
    prebuilt (compare copies one per strategy, resume restores one).

    `world`: under torchrun (the default when launched by it) each rank trains on its shard of the data.
    `out`: where the run will be saved, for the summary told before the work starts.
    """
    world = distributed.current() if world is None else world
    device = resolve_device(distributed.device_for(config.device, world))
    preset = usable_preset(config, dataset, events)
    model = placed_model(config, dataset, device, events, model)
    groups = param_groups(config.strategy, model, config.lr, config.lr_ratio)
    # record what the run really uses, not "default"
    config = replace(
        config,
        batch_size=config.batch_size or default_batch_size(device),
        lr=groups[-1]["lr"],
        image_size=preset.image_size,
    )
    precision = Precision(device, config.precision)
    model = precision.prepare(model)
    events.summary(run_summary(config, dataset, device, out, model))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # input shapes are fixed (full batches), so autotuning pays off
    loader = run_loader(config, device, cache or DecodeCache(), events)
    weights = class_weights(config, dataset, events)
    # one rank's shard can lack readable val images: every rank raises that error, none waits for the others
    sources = distributed.together(lambda: open_sources(dataset, preset, loader, config.augment, world, weights), world)
    mixing = Mixing(len(dataset.classes), config.mixup, config.cutmix) if config.mixup or config.cutmix else None
    forward, preprocess, val_features = model, preset.model_input, False
    if STRATEGIES[config.strategy].caches_features:  # freeze: its features of an image are computed once
        same_pixels = not config.augment and mixing is None  # every epoch: train's features are cached too
        backbone = FrozenBackbone(model, preset, precision)
        forward, preprocess, val_features = cache_features(backbone, sources, loader, same_pixels)
    steps = distributed.all_min(len(sources.train), device, world)
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    return Run(
        config,
        dataset,
        device,
        preset,
        model,
        wrap(forward, config, device, world),
        preprocess,
        optimizer,
        lr_schedule(optimizer, lr_factor(config, steps)),
        precision,
        sources,
        steps,
        loader,
        criterion=nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
        mixing=mixing,
        ema=EMA(model, config.ema_decay) if config.ema else None,
        val_features=val_features,
        world=world,
    )


def usable_preset(config: TrainConfig, dataset: Dataset, events: Events) -> Preset:
    """The dataset's notes told, and what a run cannot use refused before any model is built: no val split, an
    image size the backbone cannot take. How the backbone wants its pixels."""
    for note in dataset.notes:
        events.note(note)
    if not dataset.splits.get("val"):
        raise CatdogError(no_val_reason(dataset))
    preset = preset_for(config.backbone, config.image_size)
    check_image_size(config.backbone, preset.image_size)
    return preset


def placed_model(
    config: TrainConfig, dataset: Dataset, device: torch.device, events: Events, model: TransferModel | None
) -> TransferModel:
    """The run's model on this rank's device: the given one (resume, compare), wherever it was built, or one built
    from the config's weights. Once the options and weights are known good (a refused run says only why), copies of
    training images in val are named."""
    if model is None:
        model = warm_start.initial_model(config.backbone, dataset.classes, config.weights, device, config.seed, events)
    model = model.to(device)
    if leak := cross_split_note({name: split.paths for name, split in dataset.splits.items()}, config.data):
        events.note(leak)
    return model


def run_loader(config: TrainConfig, device: torch.device, cache: DecodeCache, events: Events) -> Loader:
    """How this run batches its images: its batch size, workers and seed, and a memory budget that counts what the
    cache already holds (compare's earlier cells) as room, not as used."""
    budget = memory_budget(device, config.cache_gib, cache.resident_bytes())
    return Loader(device, config.batch_size, config.workers, config.seed, budget, cache, events)
