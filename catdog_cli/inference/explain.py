"""Where a model looks: Grad-CAM heat maps through `TransferModel.features`, for every backbone of the registry.

Grad-CAM (Selvaraju et al., 2017) weights each channel of the last feature map by the mean gradient of the
class score over it, sums them and keeps the positive part. The map is found, not named per architecture:
one pass with a hook on every module of `features` records each output shaped like a map, (B, C, H, W) in
conv nets, channels-last (B, H, W, C) in ConvNeXt and Swin blocks, (B, tokens, C) in ViTs (the few prefix
tokens dropped, the rest a square grid); the target is the last output of the last map's shape that the class
score depends on position by position. In a ViT that is the input of the last block's attention, not the
final norm, after which the patch tokens no longer reach the class token.

Our own code rather than `grad-cam` or `captum`: grad-cam 1.5.7 brings opencv, matplotlib, scikit-learn,
scipy, ttach and tqdm, and both need the target layer (and, for ViT and Swin, a reshape) named by hand per
architecture, which the search above does for the whole registry and timm.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from catdog_cli.core.events import Events
from catdog_cli.core.files import write_new
from catdog_cli.core.formatting import pct
from catdog_cli.core.records import Prediction, TopLoss
from catdog_cli.data.decode import ImageBatch, ImageError, load_eval_image, open_rgb
from catdog_cli.data.presets import Preset
from catdog_cli.errors import CatdogError
from catdog_cli.models.transfer import TransferModel
from catdog_cli.reporting import overlays
from catdog_cli.runtime.device import default_batch_size

if TYPE_CHECKING:  # inference imports this module for its reports
    from catdog_cli.inference.trained import TrainedModel

MAX_PREFIX_TOKENS = 8  # class and register tokens before a ViT's patch tokens
RESAMPLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)  # their outputs are resampled, not features
PICTURE_PX = 320  # side of a `predict --explain` picture


@dataclass(frozen=True)
class Target:
    """The feature map Grad-CAM reads: a module of `features` by name, which of its calls (ResNet runs one ReLU
    module several times), and how the map is laid out ("nchw", "nhwc" or "tokens")."""

    module: str
    call: int
    layout: str


def layout_of(output: object, batch: int) -> str | None:
    """How a module's output holds a square map of the input, or None when it is not shaped like one."""
    if not isinstance(output, torch.Tensor) or not output.is_floating_point() or output.dim() not in (3, 4):
        return None
    shape = output.shape
    if shape[0] != batch:  # Swin's windows, attention heads: another batch layout
        return None
    if output.dim() == 4:
        return "nchw" if shape[2] == shape[3] > 1 else "nhwc" if shape[1] == shape[2] > 1 else None
    side = math.isqrt(shape[1])
    return "tokens" if side > 1 and shape[1] - side * side <= MAX_PREFIX_TOKENS else None


def as_nchw(t: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "nhwc":
        return t.permute(0, 3, 1, 2)
    if layout == "tokens":
        side = math.isqrt(t.shape[1])
        patches = t[:, t.shape[1] - side * side :]  # prefix tokens come first
        return patches.transpose(1, 2).reshape(t.shape[0], t.shape[2], side, side)
    return t


@contextmanager
def _gradients_through(model: TransferModel) -> Iterator[None]:
    """A frozen backbone runs without autograd; Grad-CAM needs gradients through it, for one pass."""
    frozen, training = model.frozen, model.training
    model.frozen = False
    model.eval()
    try:
        with torch.enable_grad():
            yield
    finally:
        model.frozen = frozen
        model.train(training)


def _hooked_forward(
    model: TransferModel, x: torch.Tensor, wanted: Target | None
) -> tuple[torch.Tensor, list[tuple[Target, torch.Tensor]]]:
    """Logits, and the map-shaped outputs of `features` (all of them, or the wanted one), in the order they
    were made. Each kept output is handed on as a copy, so a later in-place op (DenseNet's ReLU) cannot
    change it; the input requires grad so that even frozen weights pass gradients to it."""
    kept: list[tuple[Target, torch.Tensor]] = []
    calls: Counter[str] = Counter()

    def hook(name: str):
        def record(module: nn.Module, args: object, output: object) -> torch.Tensor | None:
            calls[name] += 1
            layout = None if isinstance(module, RESAMPLING) else layout_of(output, len(x))
            if layout is None or (wanted is not None and Target(name, calls[name], layout) != wanted):
                return None
            kept.append((Target(name, calls[name], layout), output))
            return output.clone()

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in model.features.named_modules()]
    try:
        logits = model(x.detach().requires_grad_(True))
    finally:
        for handle in handles:
            handle.remove()
    return logits, kept


def find_target(model: TransferModel, x: torch.Tensor, cls: int) -> Target:
    """The last map that the class score depends on position by position, among outputs shaped like the last
    map (so a ViT's attention projections, 3x wider, do not count)."""
    with _gradients_through(model):
        logits, kept = _hooked_forward(model, x[:1], None)
        if not kept:
            raise CatdogError(f"no feature map found in this backbone at {x.shape[-1]} px; nothing to explain")
        shape = kept[-1][1].shape
        same = [(target, t) for target, t in kept if t.shape == shape]
        grads = torch.autograd.grad(logits[0, cls], [t for _, t in same], allow_unused=True)
    for (target, _), grad in zip(reversed(same), reversed(grads)):
        if grad is not None and as_nchw(grad, target.layout).abs().sum() > 0:
            return target
    raise CatdogError("the prediction depends on no position of any feature map; nothing to explain")


class Explainer:
    """Grad-CAM for one model: the target map is found once, on the first images it explains."""

    def __init__(self, model: TransferModel):
        self.model = model
        self.target: Target | None = None

    def __call__(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) maps in 0..1 on the CPU, one per image, for the given class of each."""
        if self.target is None:
            self.target = find_target(self.model, x, int(classes[0]))
        with _gradients_through(self.model):
            logits, kept = _hooked_forward(self.model, x, self.target)
            (activation,) = (t for _, t in kept)
            score = logits.float().gather(1, classes.to(logits.device)[:, None]).sum()
            (grad,) = torch.autograd.grad(score, activation)
        a, g = as_nchw(activation.detach().float(), self.target.layout), as_nchw(grad.float(), self.target.layout)
        cam = (g.mean((2, 3), keepdim=True) * a).sum(1).clamp(min=0)
        peak = cam.flatten(1).amax(1)[:, None, None]
        # scaled to its own peak: random-init nets make maps of 1e-14 that are as telling as a trained one's
        return torch.where(peak > 0, cam / peak.clamp(min=torch.finfo(cam.dtype).tiny), 0.0).cpu()


def _model_inputs(paths: Sequence[str], preset: Preset, device: torch.device) -> tuple[list[int], torch.Tensor]:
    """The eval crops of the files that can still be read (their positions in `paths`), as model input."""
    found, images = [], []
    for n, path in enumerate(paths):
        try:
            images.append(load_eval_image(Path(path), preset.resize, preset.image_size))
        except ImageError:
            continue
        found.append(n)
    if not images:
        return found, torch.empty(0)
    index = torch.tensor(found)
    return found, preset.model_input(ImageBatch(torch.stack(images).to(device), index, index))


def add_heatmaps(
    model: TransferModel, top: list[TopLoss], classes: list[str], preset: Preset, device: torch.device
) -> None:
    """Give each top loss the heat map of its predicted class (what the model took for it), for the report."""
    found, x = _model_inputs([t["path"] for t in top], preset, device)
    if not found:
        return
    try:
        maps = Explainer(model)(x, torch.tensor([classes.index(top[n]["pred"]) for n in found]))
    except CatdogError:  # a timm model with no map of its input's shape: the report shows plain thumbnails
        return
    for n, grid in zip(found, maps.tolist()):
        top[n]["heatmap"] = {
            "grid": [[round(v, 3) for v in row] for row in grid],
            "crop": preset.crop_share,
        }


def explain_predictions(
    trained: TrainedModel,
    rows: list[Prediction],
    folder: Path,
    batch_size: int | None = None,
    events: Events | None = None,
) -> int:
    """Write a heat-map picture of each classified image into `folder` (row["explanation"]): the crop the
    model saw, colored by where it looked for its prediction, captioned with it. Never replaces a file.
    `trained`: the model that predicted the rows, at its precision (under test-time augmentation: its centre
    view, the model on its own eval crop)."""
    events = events or Events()
    folder.mkdir(parents=True, exist_ok=True)
    preset, classes = trained.base_preset, trained.classes
    batch_size = batch_size or default_batch_size(trained.device)
    todo = [r for r in rows if "label" in r]
    explainer = Explainer(trained.base)
    events.task("explaining", len(todo))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        found, x = _model_inputs([r["path"] for r in chunk], preset, trained.device)
        if found:
            with trained.precision.autocast():
                maps = explainer(x, torch.tensor([classes.index(chunk[n]["label"]) for n in found]))
            for n, grid in zip(found, maps.numpy()):
                chunk[n]["explanation"] = str(_write_picture(chunk[n], grid, preset, folder))
        events.advance(len(chunk))
    return sum("explanation" in r for r in rows)


def _write_picture(row: Prediction, grid: np.ndarray, preset: Preset, folder: Path) -> Path:
    view = overlays.model_view(open_rgb(Path(row["path"])), preset.crop_share)
    picture = overlays.caption(overlays.overlay(view, grid, PICTURE_PX), f"{row['label']} {pct(row['confidence'])}")
    return write_new(folder, Path(row["path"]).stem + ".jpg", lambda tmp: picture.save(tmp, "JPEG", quality=90))
