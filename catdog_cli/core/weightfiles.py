"""Which weights each backbone of a compare grid starts from, decided before any work.

`--weights` is one value for every backbone (`default`, `none`), one file (a grid of one backbone), a
mapping (`resnet18=/w/r18.pth,timm:tf_efficientnet_lite0=/w/lite0.pth`), or a folder of weight files named
after their backbones, as torchvision's cache names them (`resnet18-f37072fd.pth`) or plainly (`resnet18.pth`).
Offline, that is how a grid of several backbones gets its pretrained weights. Torch-free: a typo is refused
before torch is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from catdog_cli.core.defaults import TORCHVISION_BACKBONES
from catdog_cli.errors import CatdogError

SUFFIXES = (".pth", ".pt")
SHARED_VALUES = ("default", "none")  # what --weights may say for every backbone, or for one in a mapping


def weights_by_backbone(weights: str, backbones: Sequence[str]) -> dict[str, str]:
    """{backbone: "default" | "none" | a file} for every backbone of the grid, or a one-line refusal."""
    if weights in SHARED_VALUES:
        return dict.fromkeys(backbones, weights)
    path = Path(weights).expanduser()
    if path.is_dir():
        return {b: str(from_folder(path, b, backbones)) for b in backbones}
    if path.is_file():
        if len(set(backbones)) > 1:
            raise CatdogError(
                f"--weights {weights} is one file, which fits one architecture, not "
                f"{len(set(backbones))} backbones; give one file per backbone "
                "(resnet18=PATH,densenet121=PATH) or a folder of files named after them"
            )
        return dict.fromkeys(backbones, weights)
    if "=" in weights:
        return _mapping(weights, backbones)
    raise CatdogError(f"--weights {weights}: no such file or folder (or use default, none, NAME=PATH,...)")


def _mapping(weights: str, backbones: Sequence[str]) -> dict[str, str]:
    given: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in weights.split(","))):
        name, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not value:
            raise CatdogError(f"--weights: {item!r} is not NAME=PATH (or NAME=default, NAME=none)")
        if name not in backbones:
            raise CatdogError(f"--weights names {name}, which is not among the backbones ({', '.join(backbones)})")
        if name in given:
            raise CatdogError(f"--weights names {name} twice; give each backbone one file (NAME=PATH once)")
        if value not in SHARED_VALUES and not Path(value).expanduser().is_file():
            raise CatdogError(f"--weights {name}={value}: weights file not found")
        given[name] = value if value in SHARED_VALUES else str(Path(value).expanduser())
    missing = [b for b in backbones if b not in given]
    if missing:
        raise CatdogError(
            f"--weights gives nothing for {', '.join(missing)}; add {missing[0]}=PATH "
            f"(or {missing[0]}=default, {missing[0]}=none)"
        )
    return given


def from_folder(folder: Path, backbone: str, backbones: Sequence[str] = ()) -> Path:
    """The one weights file in `folder` named after `backbone` (timm's without the `timm:` prefix).

    Closest name first: NAME.pth, then NAME-*.pth (torchvision's cache: resnet18-f37072fd.pth), then NAME_*.pth
    or NAME.*.pth; a file named after a longer backbone name is never taken (vgg16 never takes vgg16_bn-*.pth).
    """
    key = backbone.removeprefix("timm:")
    twins = [b for b in backbones if b != backbone and b.removeprefix("timm:") == key]
    if twins:
        raise CatdogError(
            f"--weights {folder}: {backbone} and {twins[0]} would take the same file; give each its file with NAME=PATH"
        )
    longer = [n for n in TORCHVISION_BACKBONES if n != key and n.startswith(key)]  # vgg16_bn for vgg16
    files = sorted(
        p
        for p in folder.iterdir()
        if p.suffix in SUFFIXES and p.is_file() and not any(_named_after(p, n) for n in longer)
    )
    tiers = (
        [p for p in files if p.stem == key],
        [p for p in files if p.stem.startswith(key + "-")],
        [p for p in files if p.stem.startswith((key + "_", key + "."))],
    )
    found = next((tier for tier in tiers if tier), [])
    if not found:
        raise CatdogError(
            f"--weights {folder}: no weights file for {backbone} (looked for {key}.pth, "
            f"{key}-*.pth, {key}_*.pth); add one or give {backbone}=PATH"
        )
    if len(found) > 1:
        raise CatdogError(
            f"--weights {folder}: {len(found)} files could be {backbone}'s ({found[0].name}, "
            f"{found[1].name}); keep one or give {backbone}=PATH"
        )
    return found[0]


def _named_after(path: Path, backbone: str) -> bool:
    return path.stem == backbone or path.stem.startswith((backbone + "-", backbone + "_", backbone + "."))
