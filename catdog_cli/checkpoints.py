"""Checkpoints: everything needed to rebuild and use a model, written atomically, loaded without pickle code.

A checkpoint is a plain dict of tensors and JSON-like values, so `torch.load(weights_only=True)` reads it and
a file carrying code is refused. It never triggers a weight download: the architecture is built on the meta
device and the saved tensors are assigned into it.
"""

from __future__ import annotations

import pickle
import platform
from pathlib import Path
from typing import Any

import torch
import torchvision

from catdog_cli import __version__
from catdog_cli.backbones import TransferModel, build_empty
from catdog_cli.errors import CatdogError
from catdog_cli.paths import atomic_write

FORMAT = "catdog-checkpoint/1"
USE_KEYS = ("backbone", "classes", "image_size", "resize", "mean", "std", "state_dict")  # to rebuild and feed a model


def versions() -> dict[str, str]:
    return {"catdog": __version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "python": platform.python_version()}


def save(path: Path, model: TransferModel, meta: dict[str, Any]) -> None:
    """meta: backbone, classes, image_size, resize, mean, std, strategy, ... (plus optimizer state for resume)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, **meta, "state_dict": state, "versions": versions()}
    atomic_write(path, lambda f: torch.save(payload, f))


def load(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CatdogError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # the weights-only unpickler met something it will not build: code, objects
        raise CatdogError(f"{path} is not a catdog checkpoint (it holds code or objects other than tensors); "
                          "refusing to load it") from None
    except Exception:  # truncated, or not a torch file at all (torch raises RuntimeError, EOFError, KeyError...)
        raise CatdogError(f"{path} is not a catdog checkpoint (unreadable); refusing to load it") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CatdogError(f"{path} is not a catdog checkpoint (train one with `catdog train`)")
    missing = [k for k in USE_KEYS if k not in ckpt]
    if missing:
        raise CatdogError(f"{path} is an incomplete catdog checkpoint (no {', '.join(missing)}); refusing to load it")
    return ckpt


def restore_model(ckpt: dict[str, Any], device: torch.device | str = "cpu") -> TransferModel:
    """The trained model from a loaded checkpoint, without any random init or download."""
    model = build_empty(ckpt["backbone"], len(ckpt["classes"]))
    try:
        model.load_state_dict(ckpt["state_dict"], assign=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CatdogError(f"checkpoint does not match backbone {ckpt['backbone']}: {first}") from None
    return model.to(device).eval()
