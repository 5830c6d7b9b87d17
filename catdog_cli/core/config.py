"""What a run is asked to do: one `TrainConfig` per training run, a `CompareConfig` for a grid of them.

Torch-free, so the CLI can build and check a config before it imports torch. A run records the config it
really used (`Run.config`: the lr, batch size and image size it resolved), never the caller's object.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, asdict, dataclass, field, fields, replace
from typing import Any

from catdog_cli.core.defaults import (
    DEFAULT_BACKBONE,
    DEFAULT_OOD,
    DEFAULT_OOD_KEEP,
    GRID_STRATEGIES,
    LR_FIND_MIN_STEPS,
    SEED_BACKBONES,
    STRATEGIES,
    STRATEGY_NAMES,
)
from catdog_cli.core.paths import resolve_data
from catdog_cli.core.validate import (
    Checked,
    check_backbone,
    check_once,
    check_options,
    check_strategy,
    check_weights,
)
from catdog_cli.core.weightfiles import weights_by_backbone
from catdog_cli.core.world import World
from catdog_cli.errors import CatdogError


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
