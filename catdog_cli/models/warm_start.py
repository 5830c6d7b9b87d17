"""`train --weights runs/x/best.pt`: a new run that starts from a catdog checkpoint instead of ImageNet weights.

The checkpoint must hold the same backbone. With the same classes the whole model carries over, head included;
with other classes the backbone carries over and the head is new (seeded like any new head). Everything else
about the run (its folder, split, schedule, optimizer) is new: to continue the same run, use --resume.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from catdog_cli.core.events import Events
from catdog_cli.errors import CatdogError
from catdog_cli.models import checkpoints
from catdog_cli.models.backbones import build_empty, build_model
from catdog_cli.models.transfer import TransferModel, init_head
from catdog_cli.models.weights import conform


def _peek(weights: str) -> dict[str, Any] | None:
    """The catdog checkpoint --weights names, its tensors not read (meta), or None for 'default', 'none' or a
    plain state dict."""
    path = Path(weights)
    if weights in ("default", "none") or not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="meta", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError):
        return None  # backbones.build_model reads it as a state dict and says what is wrong with it
    return obj if isinstance(obj, dict) and obj.get("format") == checkpoints.FORMAT else None


def is_catdog_checkpoint(weights: str) -> bool:
    """Whether --weights names a file catdog wrote (rather than 'default', 'none' or a plain state dict)."""
    return _peek(weights) is not None


def _other_backbone(path: Path | str, has: object, backbone: str) -> CatdogError:
    return CatdogError(f"{path} holds a {has} model, not {backbone}: add --backbone {has} to train from it")


def check_warm_start(weights: str, backbone: str) -> None:
    """Refuse, before any work, a catdog checkpoint of another backbone as the weights a run starts from."""
    ckpt = _peek(weights)
    if ckpt is not None and ckpt.get("backbone") != backbone:
        raise _other_backbone(weights, ckpt.get("backbone"), backbone)


def initial_model(
    backbone: str, classes: list[str], weights: str, device: torch.device, seed: int | None, events: Events
) -> TransferModel:
    """What a new model starts from in every command that trains one (train, compare, lr-find), so that --weights
    means the same in each: a catdog checkpoint (a warm start), else ImageNet weights, a state dict, or none."""
    if is_catdog_checkpoint(weights):
        return from_checkpoint(Path(weights), backbone, classes, device, seed, events)
    return build_model(backbone, len(classes), weights, device, seed=seed)


def from_checkpoint(
    path: Path, backbone: str, classes: list[str], device: torch.device, seed: int | None, events: Events
) -> TransferModel:
    """The checkpoint's model for a new run on `classes`: its head too when the classes are the same."""
    ckpt = checkpoints.load(path)
    if ckpt["backbone"] != backbone:
        raise _other_backbone(path, ckpt["backbone"], backbone)
    if ckpt["classes"] == classes:
        return checkpoints.restore_model(ckpt, device).train()
    events.note(
        f"{path} was trained on {', '.join(ckpt['classes'])}; this data has {', '.join(classes)}: "
        "its backbone carries over, the head is new"
    )
    model = build_empty(backbone, len(classes))
    features = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("features.")}
    features = conform(features, model, str(path))  # as every load: the model's dtype, finite numbers
    try:
        model.features.load_state_dict({k.removeprefix("features."): v for k, v in features.items()}, assign=True)
    except RuntimeError as exc:  # its most specific line: which tensor, which shape
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise CatdogError(f"{path} does not match backbone {backbone}: {lines[-1]}") from None
    model.head = init_head(model.head.to_empty(device="cpu"), seed)
    return model.to(device)
