"""`train --weights runs/x/best.pt`: a new run that starts from a catdog checkpoint instead of ImageNet weights.

The checkpoint must hold the same backbone. With the same classes the whole model carries over, head included;
with other classes the backbone carries over and the head is new (seeded like any new head). Everything else
about the run (its folder, split, schedule, optimizer) is new: to continue the same run, use --resume.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from catdog_cli.core.events import Events
from catdog_cli.errors import CatdogError
from catdog_cli.models import checkpoints
from catdog_cli.models.backbones import TransferModel, build_empty, conform, init_head


def is_catdog_checkpoint(weights: str) -> bool:
    """Whether --weights names a file catdog wrote (rather than 'default', 'none' or a plain state dict)."""
    path = Path(weights)
    if weights in ("default", "none") or not path.is_file():
        return False
    try:
        obj = torch.load(path, map_location="meta", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError):
        return False  # backbones.build_model reads it as a state dict and says what is wrong with it
    return isinstance(obj, dict) and obj.get("format") == checkpoints.FORMAT


def from_checkpoint(
    path: Path, backbone: str, classes: list[str], device: torch.device, seed: int | None, events: Events
) -> TransferModel:
    """The checkpoint's model for a new run on `classes`: its head too when the classes are the same."""
    ckpt = checkpoints.load(path)
    if ckpt["backbone"] != backbone:
        raise CatdogError(
            f"{path} holds a {ckpt['backbone']} model, not {backbone}: add --backbone {ckpt['backbone']}"
            " to train from it"
        )
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
