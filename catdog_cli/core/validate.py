"""What an option may be, checked before any work and before torch loads: the bounds (LIMITS), known names, a
device catdog runs on, and the options of the commands that use a trained model (evaluate, predict, export). Each
refusal is one line (CatdogError); what passed comes back `Checked`, so nothing below the entry checks it again.
"""

from __future__ import annotations

import importlib.util
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from catdog_cli.core.defaults import (
    INT8_TOLERANCE,
    OOD_METHODS,
    PRECISIONS,
    STRATEGY_NAMES,
    TORCHVISION_BACKBONES,
)
from catdog_cli.core.formatting import did_you_mean
from catdog_cli.core.modelfiles import check_runtime
from catdog_cli.core.paths import check_new_file, resolve_data
from catdog_cli.errors import CatdogError

# What any run can use, inclusive (lr must be above 0). Beyond these a value is a typo or an attack,
# and is refused in one line before anything is loaded, not found out hours later (or never: a NaN lr trains).
LIMITS: dict[str, tuple[float, float]] = {
    "epochs": (1, 100_000),
    "batch_size": (1, 65_536),
    "lr": (0, 10),
    "lr_ratio": (0.001, 1_000_000),  # the backbone at lr / ratio: at most 1000 times faster than the head
    "image_size": (16, 2048),
    "seed": (0, 2**32 - 1),
    "val_split": (0, 0.9),
    "cache_gib": (0, 1_000_000),
    "workers": (0, 256),
    "weight_decay": (0, 10),
    "top_k": (1, 1000),
    "min_confidence": (0, 1),
    "freeze_epochs": (1, 100_000),
    "patience": (1, 100_000),
    "label_smoothing": (0, 0.99),
    "mixup": (0, 100),  # a Beta(A, A) alpha: beyond a few, every mix is near half and half
    "cutmix": (0, 100),
    "ood_keep": (0.5, 1),  # keeping fewer than half of the val images would call most real images unknown
    "int8_tolerance": (0, 100),  # accuracy points
}
ABOVE_ZERO = ("lr",)
SPLITS = ("val", "test", "train", "all")
DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,3})?")
EXPORT_FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript"}  # catdog export: format -> the file's suffix
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # the [export] extra
G = TypeVar("G")


@dataclass(frozen=True)
class Checked(Generic[G]):
    """What a command was given once its checks passed, and the data folder they resolved (None: no --data given).

    The entry points (`fit`, `compare`, `find_lr`, `evaluate_checkpoint`, `classify`) take the plain value, which
    they check, or this: the CLI checks before torch loads and hands it on, so that one command checks its options
    and resolves its data once, and what runs below the entry point never checks again. Made by the checks
    (`TrainConfig.check`, `CompareConfig.check`, `check_lr_find`, `check_use`), not by hand."""

    given: G
    data: Path | None = None


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_number(name: str, value: float | None) -> None:
    """One line for a number outside LIMITS[name]; NaN and infinity are never inside. None means "default"."""
    if value is None:
        return
    low, high = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CatdogError(f"{option(name)} must be a number, not {value!r}")
    above = name in ABOVE_ZERO
    if not (math.isfinite(value) and (value > low if above else value >= low) and value <= high):
        bound = f"above {_number(low)}" if above else f"at least {_number(low)}"
        raise CatdogError(f"{option(name)} {value} is out of range: it must be {bound} and at most {_number(high)}")


def _number(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def check_device(device: str) -> None:
    """auto, cpu or cuda[:N]: the devices catdog runs on (mps, xpu and meta are refused here, not mid-run)."""
    if not isinstance(device, str) or not DEVICE.fullmatch(device):
        raise CatdogError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")


def check_backbone(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise CatdogError("--backbone is empty; name a backbone (resnet34, ...) or timm:NAME")
    if name.startswith("timm:"):
        if not name.removeprefix("timm:"):
            raise CatdogError("--backbone timm: needs a model name (timm:NAME)")
        return
    if name not in TORCHVISION_BACKBONES:
        raise CatdogError(
            f"unknown backbone {name!r}; {did_you_mean(name, TORCHVISION_BACKBONES)}"
            f"(choose one of {', '.join(sorted(TORCHVISION_BACKBONES))} or timm:NAME)"
        )


def check_strategy(name: str) -> None:
    if name not in STRATEGY_NAMES:
        raise CatdogError(
            f"unknown strategy {name!r}; {did_you_mean(str(name), tuple(STRATEGY_NAMES))}"
            f"choose one of {', '.join(STRATEGY_NAMES)}"
        )


def check_precision(name: str) -> None:
    if name not in PRECISIONS:
        raise CatdogError(
            f"unknown precision {name!r}; {did_you_mean(str(name), PRECISIONS)}use {', '.join(PRECISIONS)}"
        )


def check_ood(name: str) -> None:
    if name != "none" and name not in OOD_METHODS:
        raise CatdogError(
            f"unknown detector {name!r}; {did_you_mean(str(name), OOD_METHODS)}use {', '.join(OOD_METHODS)} or none"
        )


def check_options(values: dict[str, Any]) -> None:
    """A run's options, whichever of them are given: numbers in range, known names, a device catdog runs on."""
    for name, value in values.items():
        if name in LIMITS:
            check_number(name, value)
    checks = {
        "strategy": check_strategy,
        "backbone": check_backbone,
        "device": check_device,
        "precision": check_precision,
        "ood": check_ood,
    }
    for name, check in checks.items():
        if name in values:
            check(values[name])


def check_use(
    model: Path | str,
    *,
    batch_size: int | None = None,
    device: str = "auto",
    top_k: int = 1,
    split: str = "val",
    min_confidence: float | None = None,
    precision: str = "auto",
    runtime: str = "auto",
    tta: bool = False,
    explain: bool = False,
    data: str | Path | None = None,
    report: Path | str | None = None,
) -> Checked[Path | str]:
    """evaluate's and predict's options, torch-free: refused before the checkpoint (or exported file) is read.
    evaluate's `data` is resolved here (returned with the model file, as given) and its `report` must be new."""
    path = Path(model)
    if path.is_dir():
        raise CatdogError(f"{path} is a folder, not a checkpoint file (catdog train writes OUT/best.pt)")
    if not path.exists():
        raise CatdogError(f"checkpoint not found: {path}")
    if not path.is_file():  # a FIFO would hang the read
        raise CatdogError(f"{path} is not a regular file; a checkpoint is one")
    check_runtime(path, runtime, precision, tuple(o for o, on in (("--tta", tta), ("--explain", explain)) if on))
    check_options(
        {
            "batch_size": batch_size,
            "device": device,
            "top_k": top_k,
            "min_confidence": min_confidence,
            "precision": precision,
        }
    )
    if split not in SPLITS:
        raise CatdogError(
            f"unknown split {split!r}; {did_you_mean(str(split), SPLITS)}choose one of {', '.join(SPLITS)}"
        )
    root = resolve_data(data) if data is not None else None
    if report is not None:
        check_new_file(report, "--report")
    return Checked(model, root)


def check_export(
    model: Path | str,
    fmt: str,
    out: Path | str | None = None,
    parity_images: Path | str | None = None,
    int8: bool = False,
    int8_tolerance: float = INT8_TOLERANCE,
) -> Path:
    """export's options, torch-free and before any work: the checkpoint, a known format (ONNX with its
    packages), a new file to write (returned: `out`, or MODEL with the format's suffix, .int8.onnx for --int8),
    images that exist."""
    check_use(model)
    check_number("int8_tolerance", int8_tolerance)
    if int8 and fmt != "onnx":
        raise CatdogError("--int8 quantizes an ONNX file: use it with --format onnx")
    if fmt not in EXPORT_FORMATS:
        raise CatdogError(
            f"unknown export format {fmt!r}; {did_you_mean(str(fmt), tuple(EXPORT_FORMATS))}"
            f"choose one of {', '.join(EXPORT_FORMATS)}"
        )
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None] if fmt == "onnx" else []
    if missing:
        raise CatdogError(
            f"ONNX export needs {', '.join(missing)}: pip install onnx onnxscript onnxruntime "
            "(in a clone of catdog: pip install -e '.[export]')"
        )
    if parity_images is not None and not Path(parity_images).exists():
        raise CatdogError(f"--parity-images {parity_images}: no such file or folder")
    suffix = ".int8" + EXPORT_FORMATS[fmt] if int8 else EXPORT_FORMATS[fmt]
    return check_new_file(Path(out) if out is not None else Path(model).with_suffix(suffix), "--out")


def check_weights(weights: str) -> None:
    """default, none, or a file that exists (read later, when the model is built)."""
    if weights in ("default", "none"):
        return
    path = Path(weights).expanduser()
    if not path.exists():
        raise CatdogError(f"--weights {weights}: no such file (use default, none, or the path of a state dict)")
    if not path.is_file():  # a folder, or a FIFO that would hang the read
        raise CatdogError(f"--weights {weights} is not a regular file; give the path of a state dict")


def check_once(option: str, names: list[str]) -> None:
    """A name given twice in a list option is refused: a grid (or test) of it twice would only cost time, and
    `freeze,freeze` was more likely meant as another strategy than as one."""
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise CatdogError(f"{option} names {twice} twice; name each once")
