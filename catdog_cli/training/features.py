"""freeze's feature cache: the frozen backbone's features of every image, computed once, fed to the head."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch
from torch import nn

from catdog_cli.core.events import Events
from catdog_cli.data.dataset import Split
from catdog_cli.data.decode import ImageBatch
from catdog_cli.data.presets import Preprocess, Preset
from catdog_cli.data.sources import DataSources, Loader, ResidentSource, batches
from catdog_cli.models.transfer import TransferModel
from catdog_cli.runtime.device import Precision


@dataclass(frozen=True)
class FrozenBackbone:
    """What computes freeze's features: the model's backbone, fed eval crops as the model is, at the run's
    precision."""

    model: TransferModel
    preset: Preset
    precision: Precision

    def __call__(self, batch: ImageBatch) -> torch.Tensor:
        with self.precision.autocast():
            features = self.model.features(self.preset.model_input(batch))
        return features[0] if isinstance(features, tuple) else features


def cache_features(
    backbone: FrozenBackbone, sources: DataSources, loader: Loader, train: bool
) -> tuple[nn.Module, Preprocess, bool]:
    """freeze: val's features once (they never change), and with `train` train's too (when every epoch sees the
    same pixels: no augmentation, no mixing): then a step trains the head alone. What a step runs, and whether val
    is cached."""
    model, events = backbone.model, loader.events
    forward, preprocess = model, backbone.preset.model_input
    start = time.perf_counter()
    if train:
        features = feature_source(backbone, sources.splits["train"], loader, class_weights=sources.class_weights)
        if features is not None:
            sources.train, forward, preprocess = features, model.head, CachedFeatures().model_input
    val = feature_source(backbone, sources.splits["val"], loader, name="val", shuffle=False)
    if val is not None:
        sources.val = val
        cached = "train and val" if forward is model.head else "val"
        events.note(f"backbone features of {cached} computed once in {time.perf_counter() - start:.1f}s")
    return forward, preprocess, val is not None


def feature_source(
    backbone: FrozenBackbone,
    split: Split,
    loader: Loader,
    name: str = "train",
    shuffle: bool = True,
    class_weights: list[float] | None = None,
) -> ResidentSource | None:
    """The frozen backbone's features of every image of a split (eval crops), computed once and batched like
    images; None when they would not fit the memory budget (a feature map rather than a vector, a huge dataset)."""
    events = loader.events
    # without augmentation, so the decode is already cached: quietly, its task and skipped files were told
    images = batches(split, backbone.preset.eval_spec(), replace(loader, events=Events()))
    if images is None:
        return None
    backbone.model.eval()
    parts: list[ImageBatch] = []
    events.task(f"backbone features of {name} (once)", len(split))
    with torch.inference_mode():
        for batch in images:
            features = backbone(batch)
            if not parts and features[0].numel() * 4 * len(split) > loader.budget:
                events.note("backbone features are over the memory budget; running the backbone every step")
                return None
            parts.append(ImageBatch(features.float().clone(), batch.labels, batch.index))
            events.advance(len(batch))
    cat = ImageBatch(*(torch.cat([getattr(p, f) for p in parts]) for f in ("images", "labels", "index")))
    return ResidentSource(cat, loader.batch_size, shuffle, loader.seed, images.skipped, class_weights)


class CachedFeatures:
    """A feature source's stand-in for a `Preset`: a batch of backbone features computed once is already the head's
    input."""

    def model_input(self, batch: ImageBatch, generator: torch.Generator | None = None) -> torch.Tensor:
        return batch.images
