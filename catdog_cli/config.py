"""What a run is asked to do: one `TrainConfig` per training run, a `CompareConfig` for a grid of them.

Torch-free, so the CLI can build and check a config before it imports torch. A run records the config it
really used (`Run.config`: the lr, batch size and image size it resolved), never the caller's object.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, asdict, dataclass, field, fields, replace
from typing import Any

from catdog_cli.defaults import DEFAULT_BACKBONE, SEED_BACKBONES
from catdog_cli.errors import CatdogError
from catdog_cli.strategies import STRATEGIES


@dataclass
class TrainConfig:
    data: str
    _: KW_ONLY
    backbone: str = DEFAULT_BACKBONE
    strategy: str = "finetune"
    epochs: int = 10
    batch_size: int | None = None  # 32 on CPU, 64 on CUDA
    lr: float | None = None  # per strategy, see strategies.DEFAULT_LR
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

    def check(self) -> None:
        """Refuse what no run can do, before anything is loaded."""
        if self.epochs < 1:
            raise CatdogError("--epochs must be at least 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise CatdogError("--batch-size must be at least 1")
        if self.strategy not in STRATEGIES:
            raise CatdogError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainConfig:
        """A config as a run record or checkpoint stored it; fields this version does not know are left out."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})


# what a compare grid fixes for every cell; a cell's backbone and strategy come from the grid
GRID_FIELDS = ("epochs", "batch_size", "lr", "lr_ratio", "image_size", "weights", "device", "seed", "val_split",
               "cache_gib", "workers")


@dataclass
class CompareConfig:
    """A grid: every strategy on every backbone, each cell a `TrainConfig` made from `train` by replace()."""

    train: TrainConfig
    _: KW_ONLY
    backbones: list[str] = field(default_factory=lambda: list(SEED_BACKBONES))
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))

    def check(self) -> None:
        for name in self.strategies:
            if name not in STRATEGIES:
                raise CatdogError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
        self.train.check()

    def cell(self, backbone: str, strategy: str, device: str) -> TrainConfig:
        return replace(self.train, backbone=backbone, strategy=strategy, device=device)

    def to_dict(self) -> dict[str, Any]:
        """The grid as compare.json records it: data, backbones, strategies and the settings every cell shares."""
        train = asdict(self.train)
        return {"data": self.train.data, "backbones": list(self.backbones), "strategies": list(self.strategies),
                **{k: train[k] for k in GRID_FIELDS}}

    def settings(self) -> dict[str, Any]:
        """What must match for an earlier OUT's finished cells to count (the grid itself may grow)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("backbones", "strategies", "device", "workers")}
