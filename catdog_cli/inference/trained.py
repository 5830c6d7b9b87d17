"""A trained model loaded once (Ultralytics' `Model`): its checkpoint record, the model on its device, how to
feed it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from catdog_cli.data.dataset import Split
from catdog_cli.data.presets import Preset
from catdog_cli.data.sources import Loader, ThreadedSource
from catdog_cli.inference import calibration, ood
from catdog_cli.inference.tta import TTAModel, with_tta
from catdog_cli.models import checkpoints
from catdog_cli.models.transfer import TransferModel
from catdog_cli.runtime.device import Precision, default_batch_size, resolve_device


@dataclass
class TrainedModel:
    """A checkpoint ready to use: its record, the model on its device, and how to feed it."""

    checkpoint: dict[str, Any]
    model: TransferModel
    preset: Preset
    device: torch.device
    precision: Precision

    @classmethod
    def load(cls, path: Path | str, device: str, precision: str = "auto", tta: str | None = None) -> TrainedModel:
        """`precision`: auto, fp32 or bf16 (runtime.Precision); `tta`: a view set of tta.TTA_VIEWS, the model then
        averages its probabilities over those views."""
        return cls.from_checkpoint(checkpoints.load(path), device, precision, tta)

    @classmethod
    def from_checkpoint(
        cls, ckpt: dict[str, Any], device: str, precision: str = "auto", tta: str | None = None
    ) -> TrainedModel:
        """A checkpoint already read (`checkpoints.load`) on its device: what the caller checked on its record
        first costs no second read."""
        dev = resolve_device(device)
        how = Precision.for_inference(dev, precision)
        model = how.prepare(checkpoints.restore_model(ckpt, dev))
        preset = Preset.from_checkpoint(ckpt)
        if tta is not None:
            model, preset = with_tta(model, preset, tta)
        return cls(ckpt, model, preset, dev, how)

    @property
    def classes(self) -> list[str]:
        return self.checkpoint["classes"]

    @property
    def temperature(self) -> float:
        return calibration.temperature_of(self.checkpoint)

    @functools.cached_property
    def detector(self) -> ood.Detector | None:
        """The checkpoint's unknown-image detector, on the model's device; None when it has none."""
        found = ood.from_checkpoint(self.checkpoint)
        return found.to(self.device) if found is not None else None

    def scored(self) -> AbstractContextManager[ood.Tap]:
        """The detector's score of every image the model runs on in this context (the centre view under TTA)."""
        views = self.model.views if isinstance(self.model, TTAModel) else 1
        return ood.tapped(self.base.head, views, self.detector)

    @property
    def base(self) -> TransferModel:
        """The trained model itself, without test-time augmentation around it (Grad-CAM, parameter counts)."""
        return self.model.model if isinstance(self.model, TTAModel) else self.model

    @property
    def base_preset(self) -> Preset:
        """How `base` wants its pixels: the checkpoint's eval crop (test-time augmentation decodes a larger square)."""
        return Preset.from_checkpoint(self.checkpoint)

    def one_pass(
        self,
        split: Split,
        batch_size: int | None,
        workers: int | None,
        on_skip: Callable[[Path, str], None] | None = None,
    ) -> ThreadedSource:
        return one_pass(split, self.preset, self.device, batch_size, workers, on_skip)


def one_pass(
    split: Split,
    preset: Preset,
    device: torch.device,
    batch_size: int | None,
    workers: int | None,
    on_skip: Callable[[Path, str], None] | None = None,
) -> ThreadedSource:
    """The split in order, decoded in threads a few batches ahead while the model computes: one pass keeps nothing
    resident (what every runner, PyTorch's or an exported file's, evaluates and predicts over)."""
    loader = Loader(device, batch_size or default_batch_size(device), workers, on_skip=on_skip)
    return ThreadedSource(split, preset.eval_spec(), loader)
