"""Checkpoints: everything needed to rebuild and use a model, written atomically, loaded without pickle code.

A checkpoint is a plain dict of tensors and JSON-like values, so `torch.load(weights_only=True)` reads it and
a file carrying code is refused. It never triggers a weight download: the architecture is built on the meta
device and the saved tensors are assigned into it.
"""

from __future__ import annotations

import math
import pickle
import platform
from pathlib import Path, PurePosixPath
from typing import Any

import torch
import torchvision

from catdog_cli import __version__
from catdog_cli.core.files import atomic_write
from catdog_cli.core.formatting import printed_alike
from catdog_cli.core.validate import LIMITS, check_backbone, check_number
from catdog_cli.errors import CatdogError
from catdog_cli.models.backbones import build_empty
from catdog_cli.models.transfer import TransferModel
from catdog_cli.models.weights import conform

FORMAT = "catdog-checkpoint/1"
USE_KEYS = ("backbone", "classes", "image_size", "resize", "mean", "std", "state_dict")  # to rebuild and feed a model


def versions() -> dict[str, str]:
    return {
        "catdog": __version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
    }


def save(path: Path, model: TransferModel, meta: dict[str, Any]) -> None:
    """meta: backbone, classes, image_size, resize, mean, std, strategy, ... (plus optimizer state for resume)."""
    save_state(path, cpu_state(model), meta)


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights in host memory: it holds nothing on the GPU."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def save_state(path: Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """`save`, from weights already taken out of their model (compare's --keep-best keeps them on the CPU)."""
    payload = {"format": FORMAT, **meta, "state_dict": state, "versions": versions()}
    atomic_write(path, lambda f: torch.save(payload, f))


def update(path: Path, **meta: Any) -> None:
    """Add or replace values of a saved checkpoint (best.pt's calibration), atomically like every write."""
    payload = load(path) | meta
    atomic_write(path, lambda f: torch.save(payload, f))


def load(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CatdogError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # the weights-only unpickler met something it will not build: code, objects
        raise CatdogError(
            f"{path} is not a catdog checkpoint (it holds code or objects other than tensors); refusing to load it"
        ) from None
    except Exception:  # truncated, or not a torch file at all (torch raises RuntimeError, EOFError, KeyError...)
        raise CatdogError(f"{path} is not a catdog checkpoint (unreadable); refusing to load it") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CatdogError(f"{path} is not a catdog checkpoint (train one with `catdog train`)")
    missing = [k for k in USE_KEYS if k not in ckpt]
    if missing:
        raise CatdogError(f"{path} is an incomplete catdog checkpoint (no {', '.join(missing)}); refusing to load it")
    problem = _odd_field(ckpt)
    if problem:
        raise CatdogError(f"{path} is a damaged catdog checkpoint ({problem}); refusing to load it")
    return ckpt  # keys this version does not know (a newer catdog's) are left for it, never refused


def _numbers(value: Any, n: int) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == n
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )


def _odd_field(ckpt: dict[str, Any]) -> str | None:
    """What in a checkpoint's description of its model makes no sense (None: nothing), before anything is built."""
    classes, size, resize = ckpt["classes"], ckpt["image_size"], ckpt["resize"]
    if not isinstance(ckpt["backbone"], str):
        return "its backbone is not a name"
    try:
        check_backbone(ckpt["backbone"])
    except CatdogError as exc:
        return str(exc)
    if not (
        isinstance(classes, list)
        and len(classes) >= 2
        and all(isinstance(c, str) and c for c in classes)
        and len(set(classes)) == len(classes)
        and not printed_alike(classes)
    ):
        return "its classes are not a list of at least 2 distinct names (that print distinctly)"
    low, high = LIMITS["image_size"]
    if not (type(size) is int and low <= size <= high and type(resize) is int and size <= resize <= 4 * size):
        return f"image size {size!r} with resize {resize!r}"
    if not (_numbers(ckpt["mean"], 3) and _numbers(ckpt["std"], 3) and all(v > 0 for v in ckpt["std"])):
        return "its normalization is not 3 finite means and 3 positive standard deviations"
    state = ckpt["state_dict"]
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        return "its weights are not a mapping of names to tensors"
    calibration = ckpt.get("calibration", {})  # a checkpoint written before catdog calibrated has none: T = 1
    temperature = calibration.get("temperature", 1.0) if isinstance(calibration, dict) else None
    if not (_numbers([temperature], 1) and temperature > 0):
        return f"its calibration temperature {temperature!r} is not a positive number"
    if not all(isinstance(calibration.get(k, ""), str) for k in ("fitted_on", "not_fitted")):
        return "its calibration's account is not text"
    return _odd_run_field(ckpt)


def _odd_run_field(ckpt: dict[str, Any]) -> str | None:
    """What in the record of the run that made a checkpoint (optional: read by evaluate, export, resume and warm
    starts) makes no sense: the data's path, the options they rederive a split with, the recorded split."""
    if "data" in ckpt and not isinstance(ckpt["data"], str):
        return "its data folder is not a path"
    config = ckpt.get("config", {})
    if not isinstance(config, dict):
        return "its options are not a mapping"
    for name in ("val_split", "seed"):  # what evaluate and export derive a split with (resume checks them all)
        try:
            check_number(name, config.get(name))
        except CatdogError as exc:
            return f"its options: {exc}"
    split = ckpt.get("split", {})
    if not (
        isinstance(split, dict)
        and isinstance(split.get("origin", ""), str)
        and all(_relative_paths(split.get(name, [])) for name in ("train", "val"))
    ):
        return "its recorded split is not lists of paths inside the data folder"
    return None


def _relative_paths(value: Any) -> bool:
    """A list of relative paths that stay inside the folder they are relative to (no /x, no ../x)."""
    return isinstance(value, list) and all(
        isinstance(r, str) and r and not PurePosixPath(r).is_absolute() and ".." not in PurePosixPath(r).parts
        for r in value
    )


def _mismatch(state: dict[str, torch.Tensor], model: TransferModel, classes: int) -> str | None:
    """Why weights do not fit the architecture, in words (torch's own message is a page long)."""
    reference = model.state_dict()
    missing = [k for k in reference if k not in state]
    unexpected = [k for k in state if k not in reference]
    if missing or unexpected:
        return f"{len(missing)} missing and {len(unexpected)} unexpected weights (e.g. {(missing or unexpected)[0]!r})"
    for key, want in reference.items():
        if tuple(state[key].shape) != tuple(want.shape):
            return (
                f"{key} has shape {tuple(state[key].shape)} in the file; a model for {classes} classes needs "
                f"{tuple(want.shape)}"
            )
    return None


def restore_model(ckpt: dict[str, Any], device: torch.device | str = "cpu") -> TransferModel:
    """The trained model from a loaded checkpoint, without any random init or download. Weights stored in another
    precision are converted; weights that do not fit, or are not finite, are refused with the reason."""
    backbone, classes = ckpt["backbone"], len(ckpt["classes"])
    model = build_empty(backbone, classes)
    problem = _mismatch(ckpt["state_dict"], model, classes)
    if problem:
        raise CatdogError(f"checkpoint does not match backbone {backbone}: {problem}")
    state = conform(ckpt["state_dict"], model, "the checkpoint")
    try:
        model.load_state_dict(state, assign=True)
    except RuntimeError as exc:  # anything the checks above did not foresee: its most specific line
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise CatdogError(f"checkpoint does not match backbone {backbone}: {lines[-1]}") from None
    return model.to(device).eval()
