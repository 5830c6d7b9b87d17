"""One registry of ImageNet backbones: how to build each, cut off its head, and feed it (its weights' `Preset`).

Every backbone becomes a `TransferModel` (transfer.py): `features` (the pretrained part) and `head` (a new layer
for N classes). Strategies and the engine only ever see that split, never a model's own attribute names. Weight
files and downloads are weights.py's.
"""

from __future__ import annotations

import functools
import os
import socket
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from catdog_cli.core.validate import check_backbone
from catdog_cli.data.presets import Preset
from catdog_cli.errors import CatdogError
from catdog_cli.models.transfer import TransferModel, init_head
from catdog_cli.models.weights import (
    downloads_to_stderr,
    hf_cache,
    hub_checkpoints,
    load_pretrained,
    read_state_dict,
    weights_unreachable,
)


def _replace_linear(path: str) -> Callable[[nn.Module, int], tuple[nn.Module, nn.Module]]:
    """Head = the Linear at `path`; features = the model with that Linear swapped for Identity."""

    def split(model: nn.Module, num_classes: int) -> tuple[nn.Module, nn.Module]:
        parent_path, _, leaf = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        old = parent.get_submodule(leaf)
        setattr(parent, leaf, nn.Identity())  # also right for nn.Sequential, whose children are named "0", "1", ...
        return model, nn.Linear(old.in_features, num_classes)

    return split


def _split_squeezenet(model: nn.Module, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """SqueezeNet classifies with a 1x1 conv over a feature map, then pools."""
    head = nn.Sequential(
        nn.Dropout(p=0.5), nn.Conv2d(512, num_classes, kernel_size=1), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    return model.features, head


@dataclass(frozen=True)
class TorchvisionBackbone:
    name: str
    head: str  # state-dict prefix of the ImageNet head, dropped when loading pretrained weights
    split: Callable[[nn.Module, int], tuple[nn.Module, nn.Module]]
    build_kwargs: tuple[tuple[str, object], ...] = ()
    ignore: tuple[str, ...] = ()  # pretrained keys we do not use (auxiliary heads)

    def weights_enum(self):
        return torchvision.models.get_model_weights(self.name).DEFAULT

    def preset(self) -> Preset:
        """What the weights were trained on: their eval crop and resize, their normalization."""
        t = self.weights_enum().transforms()
        return Preset(t.crop_size[0], t.resize_size[0], tuple(t.mean), tuple(t.std))

    def build_full(self) -> nn.Module:
        return torchvision.models.get_model(self.name, weights=None, **dict(self.build_kwargs))

    def build_meta(self) -> nn.Module:
        """The architecture on the meta device, no init spent. RegNet's constructor computes its widths with
        tensors, which meta cannot: it is built on the CPU (global RNG untouched) and moved to meta."""
        try:
            with torch.device("meta"):
                return self.build_full()
        except NotImplementedError:
            with torch.random.fork_rng(devices=[]):
                return self.build_full().to("meta")

    def pretrained_state_dict(self) -> dict[str, torch.Tensor]:
        weights = self.weights_enum()
        try:
            with downloads_to_stderr():
                return weights.get_state_dict(progress=True, check_hash=True)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash is a RuntimeError
            target = hub_checkpoints() / os.path.basename(weights.url)
            offline = f"download {weights.url} elsewhere and put it at {target}"
            raise weights_unreachable(self.name, exc, offline) from None


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
REACH_TIMEOUT = 5.0  # seconds for a TCP connection to the weights' host: a reachable one answers in far less


def _timm_cached(cfg: object) -> bool:
    """Whether timm's weights for this pretrained config are on disk already (Hugging Face's cache or torch's)."""
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = hub_id.partition("@")
        names = ("model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin")
        return any(isinstance(try_to_load_from_cache(repo, n, revision=revision or None), str) for n in names)
    url = getattr(cfg, "url", None)
    return bool(url) and (hub_checkpoints() / os.path.basename(url)).is_file()


def _tv(name: str, head: str, split=None, **kwargs) -> TorchvisionBackbone:
    ignore = ("aux1.", "aux2.") if name == "googlenet" else ()
    return TorchvisionBackbone(name, head, split or _replace_linear(head.rstrip(".")), tuple(kwargs.items()), ignore)


TORCHVISION = {
    b.name: b
    for b in [
        _tv("alexnet", "classifier.6."),
        _tv("vgg11_bn", "classifier.6."),
        _tv("vgg16", "classifier.6."),
        _tv("vgg16_bn", "classifier.6."),
        _tv("vgg19_bn", "classifier.6."),
        _tv("resnet18", "fc."),
        _tv("resnet34", "fc."),
        _tv("resnet50", "fc."),
        _tv("resnet101", "fc."),
        _tv("resnext50_32x4d", "fc."),
        _tv("wide_resnet50_2", "fc."),
        _tv("densenet121", "classifier."),
        _tv("densenet169", "classifier."),
        _tv("squeezenet1_0", "classifier.1.", _split_squeezenet),
        _tv("squeezenet1_1", "classifier.1.", _split_squeezenet),
        # transform_input: torchvision's ImageNet GoogLeNet expects it (it sets it when loading its weights).
        # init_weights=False, as torchvision builds it for its weights: its own init (truncated normal, std 0.01)
        # leaves the BatchNorm inputs of a random-init GoogLeNet ~50x smaller than the running variance they start
        # from (1), and a short run's eval-mode statistics never catch up: compare's googlenet cells sat at chance
        _tv("googlenet", "fc.", aux_logits=False, init_weights=False, transform_input=True),
        _tv("mobilenet_v2", "classifier.1."),
        _tv("mobilenet_v3_small", "classifier.3."),
        _tv("mobilenet_v3_large", "classifier.3."),
        _tv("efficientnet_b0", "classifier.1."),
        _tv("efficientnet_b1", "classifier.1."),
        _tv("efficientnet_b2", "classifier.1."),
        _tv("efficientnet_v2_s", "classifier.1."),
        _tv("regnet_y_400mf", "fc."),
        _tv("shufflenet_v2_x1_0", "fc."),
        _tv("convnext_tiny", "classifier.2."),
        _tv("convnext_small", "classifier.2."),
        _tv("vit_b_16", "heads.head."),
        _tv("swin_t", "head."),
    ]
}


@dataclass(frozen=True)
class TimmBackbone:
    """`timm:NAME`: any timm model; its pretrained config, not ImageNet constants, gives the normalization."""

    name: str  # without the "timm:" prefix

    @staticmethod
    def _timm():
        try:
            import timm
        except ImportError:
            raise CatdogError(
                "timm backbones need timm: pip install timm (in a clone of catdog: pip install -e '.[timm]')"
            ) from None
        return timm

    def preset(self) -> Preset:
        cfg = self._timm().get_pretrained_cfg(self.name)
        if cfg is None:
            raise CatdogError(f"timm has no model named {self.name!r}")
        crop = cfg.input_size[-1]
        return Preset(crop, int(round(crop / cfg.crop_pct)), tuple(cfg.mean), tuple(cfg.std))

    def build_features(self, pretrained: bool) -> nn.Module:
        timm = self._timm()
        if pretrained:
            self._check_reachable()
        try:
            with downloads_to_stderr():
                return timm.create_model(self.name, pretrained=pretrained, num_classes=0)
        except RuntimeError as exc:
            raise CatdogError(f"timm could not build {self.name}: {exc}") from None
        except OSError as exc:
            raise weights_unreachable(f"timm:{self.name}", exc, self._offline_hint()) from None

    def _check_reachable(self) -> None:
        """Weights neither cached nor reachable fail at once: offline, timm's hub client would retry for about a
        minute and print a screen of warnings before catdog's line."""
        cfg = self._timm().get_pretrained_cfg(self.name)
        if cfg is None or _timm_cached(cfg) or any(os.environ.get(v) for v in PROXY_VARIABLES):
            return  # a proxy: the hub's own client knows how to use it, a probe would not
        if cfg.hf_hub_id:
            from huggingface_hub import constants

            host = urllib.parse.urlparse(constants.ENDPOINT).hostname
        else:
            host = urllib.parse.urlparse(cfg.url or "").hostname
        if not host:
            return
        try:
            socket.create_connection((host, 443), timeout=REACH_TIMEOUT).close()
        except OSError as exc:
            raise weights_unreachable(f"timm:{self.name}", f"{host} unreachable: {exc}", self._offline_hint()) from None

    def _offline_hint(self) -> str:
        return f"run it once where they download (timm keeps them in {hf_cache()})"


def _timm_width(features: nn.Module) -> int:
    """What a timm model without its classifier outputs: MobileNetV3's head conv makes it wider than num_features."""
    return getattr(features, "head_hidden_size", None) or features.num_features


def resolve(name: str) -> TorchvisionBackbone | TimmBackbone:
    check_backbone(name)  # an unknown name gets the closest known ones
    if name.startswith("timm:"):
        return TimmBackbone(name.removeprefix("timm:"))
    return TORCHVISION[name]


def weights_preset(name: str) -> Preset:
    """How `name`'s pretrained weights want their pixels, at their own crop size."""
    return resolve(name).preset()


def preset_for(backbone: str, image_size: int | None) -> Preset:
    """How `backbone`'s pretrained weights want their pixels, at `image_size` (default: the weights' own)."""
    own = weights_preset(backbone)
    return own.for_crop(image_size) if image_size else own


def _on_meta(module: nn.Module) -> bool:
    return any(t.is_meta for t in (*module.parameters(), *module.buffers()))


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """torch's global RNG seeded inside and restored after: a random init that is the same for a seed, without
    changing the random numbers of anything that runs later."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _new_head(make: Callable[[], tuple[nn.Module, nn.Module]], seed: int | None) -> tuple[nn.Module, nn.Module]:
    """Split off the ImageNet head; the new one is made on meta (no init spent), then initialized on the CPU."""
    with torch.device("meta"):
        features, head = make()
    return features, init_head(head.to_empty(device="cpu"), seed)


def build_model(
    name: str, num_classes: int, weights: str = "default", device: torch.device | str = "cpu", seed: int | None = None
) -> TransferModel:
    """Backbone with pretrained weights ('default'), random init ('none') or a local state dict (a path).

    Pretrained backbones are built on the meta device and the weights assigned straight in, so no time is
    spent on a random init that would be overwritten. Random init and the new head are seeded for fair
    comparisons, without touching torch's global random state.
    """
    spec = resolve(name)
    device, source = torch.device(device), weights
    if isinstance(spec, TimmBackbone):
        with _seeded(seed, device), torch.device(device):
            features = spec.build_features(pretrained=weights == "default")
        if weights not in ("default", "none"):
            classifier = features.pretrained_cfg.get("classifier") or "classifier"
            load_pretrained(features, read_state_dict(Path(weights)), (f"{classifier}.",), source)
        head = init_head(nn.Linear(_timm_width(features), num_classes, device="meta").to_empty(device="cpu"), seed)
        return TransferModel(features, head).to(device)

    if weights == "none":
        with _seeded(seed, device), torch.device(device):  # init where the model runs: a GPU initializes vgg16 fast
            full = spec.build_full()
    else:
        state = spec.pretrained_state_dict() if weights == "default" else read_state_dict(Path(weights))
        if weights == "default":
            source = f"torchvision's {spec.weights_enum()}"
        full = spec.build_meta()
        load_pretrained(full, state, (spec.head, *spec.ignore), source)
    features, head = _new_head(lambda: spec.split(full, num_classes), seed)
    if _on_meta(features):  # a buffer that no state dict carries; none of the registry's models has one
        raise CatdogError(f"weights from {source} left parts of {name} uninitialized")
    return TransferModel(features, head).to(device)


def build_empty(name: str, num_classes: int) -> TransferModel:
    """The architecture only, on the meta device: for loading a catdog checkpoint without any init."""
    spec = resolve(name)
    if isinstance(spec, TimmBackbone):
        with torch.device("meta"):
            features = spec.build_features(pretrained=False)
            return TransferModel(features, nn.Linear(_timm_width(features), num_classes))
    full = spec.build_meta()
    with torch.device("meta"):
        return TransferModel(*spec.split(full, num_classes))


@functools.cache
def check_image_size(name: str, size: int) -> None:
    """Refuse a crop size the architecture cannot take (AlexNet below 63 px, ViT at anything but 224), found by
    a shape-only pass on the meta device: no weights, no compute, before any data is decoded."""
    crop = weights_preset(name).image_size
    if size == crop:
        return
    model = build_empty(name, 2).eval()
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, size, size, device="meta"))
    except (RuntimeError, AssertionError, ValueError) as exc:  # the architecture's own shape checks
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CatdogError(
            f"{name} cannot take {size} px images ({reason}); choose another --image-size "
            f"(its weights were made for {crop} px)"
        ) from None


def prefetch_weights(name: str) -> Path:
    """Download torchvision's ImageNet weights into the torch hub cache so later runs work offline."""
    spec = resolve(name)
    if isinstance(spec, TimmBackbone):
        raise CatdogError("fetch --weights covers torchvision backbones; timm caches its own on first use")
    spec.pretrained_state_dict()
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(spec.weights_enum().url)


def cached_weights() -> dict[str, Path]:
    """The backbones whose ImageNet weights are already on disk, so that --weights default works offline: every
    torchvision backbone with its file in the torch hub cache, and each timm model in the Hugging Face cache."""
    found = {}
    for name, spec in TORCHVISION.items():
        path = hub_checkpoints() / os.path.basename(spec.weights_enum().url)
        if path.is_file():
            found[name] = path
    for folder in sorted(hf_cache().glob("models--timm--*")):
        if any((folder / "snapshots").glob("*/*")):
            found["timm:" + folder.name.removeprefix("models--timm--").split(".")[0]] = folder
    return found
