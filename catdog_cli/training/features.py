"""freeze's feature cache: the frozen backbone's features of every image, computed once, fed to the head."""

from __future__ import annotations

import time

import torch
from torch import nn

from catdog_cli.core.config import TrainConfig
from catdog_cli.core.events import Events
from catdog_cli.data.augment import Mixing
from catdog_cli.data.dataset import Split
from catdog_cli.data.decode import ImageBatch
from catdog_cli.data.presets import Preprocess, Preset
from catdog_cli.data.sources import DataSources, DecodeCache, ResidentSource, batches
from catdog_cli.models.transfer import TransferModel
from catdog_cli.runtime.device import Precision


def cache_features(
    config: TrainConfig,
    model: TransferModel,
    sources: DataSources,
    preset: Preset,
    precision: Precision,
    cache: DecodeCache,
    budget: int,
    events: Events,
    mixing: Mixing | None,
    weights: list[float] | None,
) -> tuple[nn.Module, Preprocess, bool]:
    """freeze: val's features once (they never change), and train's too when every epoch sees the same pixels
    (no augmentation, no mixing): then a step trains the head alone. What a step runs, and whether val is cached."""
    forward, preprocess = model, preset.model_input
    start = time.perf_counter()
    if not config.augment and mixing is None:
        features = feature_source(
            model,
            sources.splits["train"],
            preset,
            precision,
            config.batch_size,
            config.seed,
            cache,
            budget,
            config.workers,
            events,
            class_weights=weights,
        )
        if features is not None:
            sources.train, forward, preprocess = features, model.head, CachedFeatures().model_input
    val = feature_source(
        model,
        sources.splits["val"],
        preset,
        precision,
        config.batch_size,
        config.seed,
        cache,
        budget,
        config.workers,
        events,
        shuffle=False,
        name="val",
    )
    if val is not None:
        sources.val = val
        cached = "train and val" if forward is model.head else "val"
        events.note(f"backbone features of {cached} computed once in {time.perf_counter() - start:.1f}s")
    return forward, preprocess, val is not None


def feature_source(
    model: TransferModel,
    split: Split,
    preset: Preset,
    precision: Precision,
    batch_size: int,
    seed: int,
    cache: DecodeCache,
    budget: int,
    workers: int | None,
    events: Events,
    shuffle: bool = True,
    name: str = "train",
    class_weights: list[float] | None = None,
) -> ResidentSource | None:
    """The frozen backbone's features of every image of a split (eval crops), computed once and batched like
    images; None when they would not fit the memory budget (a feature map rather than a vector, a huge dataset)."""
    images = batches(
        split,
        preset.eval_spec(),
        batch_size,
        shuffle=False,
        device=precision.device,
        cache=cache,
        budget=budget,
        workers=workers,
    )  # without augmentation: the decode is already cached
    if images is None:
        return None
    model.eval()
    parts: list[ImageBatch] = []
    events.task(f"backbone features of {name} (once)", len(split))
    with torch.inference_mode():
        for batch in images:
            with precision.autocast():
                features = model.features(preset.model_input(batch))
            if isinstance(features, tuple):
                features = features[0]
            if not parts and features[0].numel() * 4 * len(split) > budget:
                events.note("backbone features are over the memory budget; running the backbone every step")
                return None
            parts.append(ImageBatch(features.float().clone(), batch.labels, batch.index))
            events.advance(len(batch))
    cat = ImageBatch(*(torch.cat([getattr(p, f) for p in parts]) for f in ("images", "labels", "index")))
    return ResidentSource(
        cat, batch_size, shuffle=shuffle, seed=seed, skipped=images.skipped, class_weights=class_weights
    )


class CachedFeatures:
    """A feature source's stand-in for a `Preset`: a batch of backbone features computed once is already the head's
    input."""

    def model_input(self, batch: ImageBatch, generator: torch.Generator | None = None) -> torch.Tensor:
        return batch.images
