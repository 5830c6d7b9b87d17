"""Weights from outside catdog: where the ImageNet downloads are cached, the one line when they cannot be had, and
a state-dict file read, conformed to the model (dtype, layout, finite values) and loaded without the old head.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from catdog_cli.errors import CatdogError


def weights_unreachable(name: str, reason: object, offline: str) -> CatdogError:
    """The one line for ImageNet weights that cannot be had, torchvision's or timm's: the reason, then what to
    do offline."""
    return CatdogError(
        f"could not get ImageNet weights for {name} ({reason}); offline, {offline}, or pass --weights PATH "
        "(or --weights none)"
    )


@contextmanager
def downloads_to_stderr() -> Iterator[None]:
    """torch hub announces a download on stdout ("Downloading: ..."); stdout carries only results (`--json`)."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CatdogError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means: not a plain state dict we can trust
        raise CatdogError(f"{path} is not a loadable state dict ({type(exc).__name__}); refusing to load it") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CatdogError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def conform(state: dict[str, torch.Tensor], model: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """Tensors as the model holds them: fp16, bf16 and fp64 files (common: half-precision exports) become the
    model's fp32, sparse and quantized tensors dense; weights that are not numbers, or not finite (a run that
    diverged), are refused here rather than predicting NaN."""
    reference = model.state_dict()
    out = {}
    for key, value in state.items():
        if value.is_quantized:
            value = value.dequantize()
        if value.layout != torch.strided:
            value = value.to_dense()
        want = reference.get(key)
        if want is not None and want.is_floating_point() and value.dtype != want.dtype:
            if not value.is_floating_point():
                raise CatdogError(f"weights from {source} hold {key} as {value.dtype}, not as numbers this model uses")
            value = value.to(want.dtype)
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CatdogError(
                f"weights from {source} are not finite (NaN or infinity in {key}): the training that "
                "made them diverged; refusing to use them"
            )
        out[key] = value
    return out


def load_pretrained(model: nn.Module, state: dict[str, torch.Tensor], drop: tuple[str, ...], source: str) -> None:
    """Load everything but the ImageNet head (`drop` prefixes); any other missing or foreign key means wrong weights."""
    state = conform({k: v for k, v in state.items() if not (drop and k.startswith(drop))}, model, source)
    try:
        result = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise CatdogError(f"weights from {source} do not fit this backbone: {first}") from None
    missing = [k for k in result.missing_keys if not (drop and k.startswith(drop))]
    if missing or result.unexpected_keys:
        bad = (missing or result.unexpected_keys)[0]
        raise CatdogError(
            f"weights from {source} do not fit this backbone: {len(missing)} missing and "
            f"{len(result.unexpected_keys)} unexpected keys (e.g. {bad!r})"
        )


def hub_checkpoints() -> Path:
    """The torch hub cache's folder of downloaded weights (TORCH_HOME moves it)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_cache() -> Path:
    """Where huggingface_hub (timm's downloader) caches models: HF_HUB_CACHE, HF_HOME/hub, or ~/.cache."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(home) / "hub"
