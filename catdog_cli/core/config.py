"""What a run is asked to do: one `TrainConfig` per training run, a `CompareConfig` for a grid of them.

Torch-free, so the CLI can build and check a config before it imports torch. A run records the config it
really used (`Run.config`: the lr, batch size and image size it resolved), never the caller's object.
"""

from __future__ import annotations

import importlib.util
import math
import re
from dataclasses import KW_ONLY, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from catdog_cli.core.defaults import (
    DEFAULT_BACKBONE,
    DEFAULT_OOD,
    DEFAULT_OOD_KEEP,
    GRID_STRATEGIES,
    INT8_TOLERANCE,
    LR_FIND_MIN_STEPS,
    OOD_METHODS,
    PRECISIONS,
    SEED_BACKBONES,
    STRATEGIES,
    STRATEGY_NAMES,
    TORCHVISION_BACKBONES,
)
from catdog_cli.core.formatting import did_you_mean
from catdog_cli.core.modelfiles import check_runtime
from catdog_cli.core.paths import check_new_file, resolve_data
from catdog_cli.core.weightfiles import weights_by_backbone
from catdog_cli.core.world import World
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


@dataclass
class TrainConfig:
    data: str
    _: KW_ONLY
    backbone: str = DEFAULT_BACKBONE
    strategy: str = "finetune"
    epochs: int = 10
    batch_size: int | None = None  # 32 on CPU, 64 on CUDA
    lr: float | None = None  # per strategy: defaults.STRATEGIES[strategy].lr
    lr_ratio: float = 10.0
    image_size: int | None = None  # the weights' crop size (224 for most)
    weights: str = "default"
    device: str = "auto"
    seed: int = 0
    val_split: float = 0.2
    augment: bool = True
    compile: bool = False
    cache_gib: float | None = None
    workers: int | None = None
    weight_decay: float = 0.01
    precision: str = "auto"  # auto: bf16 on GPUs and on CPUs that do bf16 natively, else fp32 (runtime.Precision)
    # the training recipe; benchmarks/README.md has what each did on real data
    freeze_epochs: int = 1  # freeze-unfreeze: head-only epochs before the whole model trains
    patience: int | None = None  # stop after this many epochs without a better val accuracy (ties: val loss)
    label_smoothing: float = 0.0
    mixup: float = 0.0  # Beta(alpha, alpha) of the mixing weight; 0: off
    cutmix: float = 0.0  # the same for CutMix; with both on, each batch uses one of them
    ema: bool = False  # also keep an exponential moving average of the weights, evaluated each epoch
    ema_decay: float = 0.999
    balance: bool = False  # draw training images by inverse class frequency (beat a class-weighted loss)
    ood: str = DEFAULT_OOD  # the unknown-image detector fitted after the last epoch (inference/ood.py), or "none"
    ood_keep: float = DEFAULT_OOD_KEEP  # the share of val images its threshold keeps

    def recipe(self) -> list[str]:
        """The recipe options this run sets away from their defaults, as typed (`--mixup 0.2`, `--ema`)."""
        defaults = TrainConfig(self.data)
        changed = [(name, value) for name in RECIPE_FIELDS if (value := getattr(self, name)) != getattr(defaults, name)]
        return [f"--{name.replace('_', '-')}" + ("" if value is True else f" {value}") for name, value in changed]

    def check(self, weights: bool = True) -> Checked[TrainConfig]:
        """Refuse what no run can do, before anything is loaded (torch is not imported for it): every number in
        range, known names, a device catdog runs on, data that exists and, with `weights`, a weights file that
        exists (a resumed run has its weights already). The config with its data folder resolved."""
        self.check_settings(weights)
        return Checked(self, resolve_data(self.data))

    def check_settings(self, weights: bool = True) -> None:
        """What `check` refuses, but for the data folder: what each strategy of a grid is held to (the grid's data
        is resolved once), and a resumed run's saved options (its data was found where it is now)."""
        check_options(asdict(self))
        if weights:
            check_weights(self.weights)
        self.check_recipe()

    def check_recipe(self) -> None:
        """What the recipe's options mean together (their ranges are in LIMITS)."""
        if STRATEGIES[self.strategy].unfreezes and self.freeze_epochs >= self.epochs:
            raise CatdogError(
                f"{self.strategy}: --freeze-epochs ({self.freeze_epochs}) must be fewer than --epochs "
                f"({self.epochs}), or nothing is ever unfrozen"
            )
        if not (isinstance(self.ema_decay, (int, float)) and 0 < self.ema_decay < 1):  # NaN too
            raise CatdogError("--ema-decay must be between 0 and 1")

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainConfig:
        """A config from named values: a run record or checkpoint as stored, or a command's parsed options; names
        that are no field of it (this version's, or other options of the command) are left out."""
        known = cls.field_names()
        return cls(**{k: v for k, v in saved.items() if k in known})


def check_once(option: str, names: list[str]) -> None:
    """A name given twice in a list option is refused: a grid (or test) of it twice would only cost time, and
    `freeze,freeze` was more likely meant as another strategy than as one."""
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise CatdogError(f"{option} names {twice} twice; name each once")


def check_lr_find(
    config: TrainConfig, strategies: list[str], start: float, end: float, steps: int
) -> Checked[TrainConfig]:
    """lr-find's options, torch-free: the CLI refuses them before torch loads and hands the result to `find_lr`
    (which checks them itself when called from Python). The config with its data folder resolved."""
    if World.from_env().distributed:  # every rank would run its own test and write the same folder
        raise CatdogError("lr-find runs on one process: start it with python -m catdog_cli or catdog, not torchrun")
    high = 1e6  # far past any rate that trains: the test stops once the loss blows up
    if not (isinstance(start, (int, float)) and isinstance(end, (int, float)) and 0 < start < end <= high):
        raise CatdogError(f"--start-lr {start:g} and --end-lr {end:g}: need 0 < start < end <= {high:g}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not LR_FIND_MIN_STEPS <= steps <= 100_000:
        raise CatdogError(f"--steps {steps}: must be at least {LR_FIND_MIN_STEPS} and at most 100,000")
    if not strategies:
        raise CatdogError("--strategies: name at least one strategy")
    check_once("--strategies", strategies)
    for strategy in strategies:
        replace(config, strategy=strategy, epochs=2).check_settings()
    return Checked(config, resolve_data(config.data))


# what a compare grid fixes for every cell; a cell's backbone and strategy come from the grid
RECIPE_FIELDS = ("freeze_epochs", "patience", "label_smoothing", "mixup", "cutmix", "ema", "ema_decay", "balance")
GRID_FIELDS = (
    "epochs",
    "batch_size",
    "lr",
    "lr_ratio",
    "image_size",
    "weights",
    "device",
    "seed",
    "val_split",
    "cache_gib",
    "workers",
    "precision",
    *RECIPE_FIELDS,
)


@dataclass
class CompareConfig:
    """A grid: every strategy on every backbone, each cell a `TrainConfig` made from `train` by replace()."""

    train: TrainConfig
    _: KW_ONLY
    backbones: list[str] = field(default_factory=lambda: list(SEED_BACKBONES))
    strategies: list[str] = field(default_factory=lambda: list(GRID_STRATEGIES))

    def check(self) -> Checked[CompareConfig]:
        """What train refuses, for every cell of the grid, before any cell; the grid with its data folder resolved."""
        if not self.backbones:
            raise CatdogError("--backbones names no backbone; give at least one (e.g. --backbones resnet34)")
        if not self.strategies:
            raise CatdogError(f"--strategies names no strategy; give at least one of {', '.join(STRATEGY_NAMES)}")
        for name in self.strategies:
            check_strategy(name)
        for name in self.backbones:
            check_backbone(name)
        check_once("--strategies", self.strategies)
        check_once("--backbones", self.backbones)  # the CLI's presets may overlap: expand_backbones takes each once
        for name in self.strategies:  # what train refuses for a strategy, refused for the grid before any cell
            replace(self.train, strategy=name).check_settings(weights=False)  # --weights may name one per backbone
        root = resolve_data(self.train.data)
        for weights in set(weights_by_backbone(self.train.weights, self.backbones).values()):
            check_weights(weights)
        return Checked(self, root)

    def weights_for(self, backbone: str) -> str:
        """The backbone's own weights: --weights may be a mapping or a folder (see weightfiles.py)."""
        return weights_by_backbone(self.train.weights, self.backbones)[backbone]

    def cell(self, backbone: str, strategy: str, device: str) -> TrainConfig:
        return replace(
            self.train, backbone=backbone, strategy=strategy, device=device, weights=self.weights_for(backbone)
        )

    def to_dict(self) -> dict[str, Any]:
        """The grid as compare.json records it: data, backbones, strategies and the settings every cell shares."""
        train = asdict(self.train)
        return {
            "data": self.train.data,
            "backbones": list(self.backbones),
            "strategies": list(self.strategies),
            **{k: train[k] for k in GRID_FIELDS},
        }

    def settings(self) -> dict[str, Any]:
        """What must match for an earlier OUT's finished cells to count (the grid itself may grow). Recipe options
        at their defaults are left out, so a compare made before they existed can still be finished."""
        defaults = TrainConfig("")
        return {
            k: v
            for k, v in self.to_dict().items()
            if k not in ("backbones", "strategies", "device", "precision", "workers")
            and not (k in RECIPE_FIELDS and v == getattr(defaults, k))
        }
