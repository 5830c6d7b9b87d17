"""Defaults that --help shows, importable without torch (so `catdog --help` and `catdog fetch` start fast)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_BACKBONE = "resnet34"
SEED_BACKBONES = ("alexnet", "vgg16_bn", "resnet34", "densenet121", "squeezenet1_1", "googlenet")

# every torchvision backbone catdog knows (backbones.TORCHVISION builds them), named here so that a typo in
# --backbone is answered before torch is imported
TORCHVISION_BACKBONES = (
    "alexnet",
    "vgg11_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19_bn",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "densenet121",
    "densenet169",
    "squeezenet1_0",
    "squeezenet1_1",
    "googlenet",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_v2_s",
    "regnet_y_400mf",
    "shufflenet_v2_x1_0",
    "convnext_tiny",
    "convnext_small",
    "vit_b_16",
    "swin_t",
)
DEFAULT_TTA = "flip+crops"  # what --tta averages over (tta.TTA_VIEWS): benchmarks/README.md, it beat "flip"
LR_FIND_MIN_STEPS = 11  # lr_find's smoothing window (2 * 4 + 1 steps) and a step either side

# `catdog compare --backbones PRESET`: named lists of backbones, usable alone or among names
BACKBONE_PRESETS: dict[str, tuple[str, ...]] = {
    "seed": SEED_BACKBONES,  # the six of the course the project started from
    "modern": ("resnet50", "efficientnet_b0", "convnext_tiny", "mobilenet_v3_large", "regnet_y_400mf", "vit_b_16"),
    "fast": ("mobilenet_v3_small", "shufflenet_v2_x1_0", "mobilenet_v3_large", "regnet_y_400mf"),  # for CPUs
}


def expand_backbones(names: Iterable[str]) -> list[str]:
    """Backbone names with each preset replaced by its list, in order, each backbone once."""
    expanded = [b for name in names for b in BACKBONE_PRESETS.get(name, (name,))]
    return list(dict.fromkeys(expanded))


# what `catdog compare --help` says a grid costs: an estimate, from benchmarks/presets.py (see benchmarks/README.md)
GRID_TIME_HELP = (
    "Rough time of a grid at 224 px, 3 strategies x 3 epochs on hymenoptera's 397 images (it grows with images x "
    "epochs): on a 2-core CPU, fast about 25 min, seed or modern about 3 h (estimated from per-image speeds "
    "measured on a busy 2-core machine; a quiet one is faster); on one GPU, a minute or two, mostly each cell's "
    "setup (estimated from the grid's 0.3 PFLOP; not measured)."
)


@dataclass(frozen=True)
class Strategy:
    """A transfer strategy as data (fastai's `model_meta` idea): one record says all that catdog asks of it.

    It lives here, torch-free, because the config (core) checks against it and `--help` reads its lr before torch
    loads, and core may not import models. Only the torch half stays in models/strategies.py: the builder of each
    `groups` layout, and the freezing."""

    name: str
    lr: float  # the new head's default --lr, with AdamW
    # the parameter groups (models/strategies.GROUPS): "all" at lr; "head" alone; "split": the backbone at
    # lr / --lr-ratio, the head at lr
    groups: str
    frozen: bool = False  # the backbone starts frozen: no gradients, its BatchNorm statistics kept
    unfreezes: bool = False  # ... and the whole model trains from epoch --freeze-epochs on

    @property
    def caches_features(self) -> bool:
        """The backbone never changes during the run: its features of an image can be computed once."""
        return self.frozen and not self.unfreezes

    def unfreeze_epoch(self, freeze_epochs: int) -> int | None:
        """The epoch (0-based) from which the whole model trains after a frozen start, or None."""
        return freeze_epochs if self.unfreezes else None


# With AdamW: the head of a frozen backbone takes a large step; updating pretrained weights needs a small one.
# freeze: 3e-3 converges within compare's 3 epochs too (1e-3 needed 10: benchmarks/README.md, the probe)
STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("finetune", 1e-4, "all"),  # everything trains from the pretrained weights
        Strategy("freeze", 3e-3, "head", frozen=True),  # only the new head trains
        Strategy("discriminative", 1e-3, "split"),  # everything trains, the pretrained part slower
        Strategy("freeze-unfreeze", 1e-3, "split", frozen=True, unfreezes=True),  # fastai's fine_tune
    )
}
STRATEGY_NAMES = tuple(STRATEGIES)
# compare's default grid: freeze-unfreeze is there for whoever names it (benchmarks/README.md: it did not earn
# a place in every grid)
GRID_STRATEGIES = ("finetune", "freeze", "discriminative")

COMPARE_EPOCHS = 3  # epochs per compare cell: a grid is many runs, each shorter than a train run
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 on GPUs and on CPUs with native bf16, else fp32/fp16
# the unknown-image detector fitted at the end of training (inference/ood.py; benchmarks/README.md chose the default)
OOD_METHODS = ("msp", "energy", "mahalanobis", "knn", "vim")
DEFAULT_OOD = "knn"
DEFAULT_OOD_KEEP = 0.95  # the share of val images its threshold keeps
# predict/evaluate --runtime: auto runs a checkpoint on the CPU in onnxruntime (an export cached beside it), on a GPU
# in PyTorch; an exported file always in its own runtime (benchmarks/README.md: predict on the CPU, issue 27)
RUNTIMES = ("auto", "torch", "onnxruntime")
# export --int8: accuracy points the int8 file may lose on the run's val split against the fp32 file (issue 27)
INT8_TOLERANCE = 0.5
# `catdog --threads N` puts N here (an environment variable, so that torchrun's ranks and worker processes see it);
# runtime.device.choose_threads reads it before OMP_NUM_THREADS
THREADS_ENV = "CATDOG_THREADS"
# the datasets `catdog fetch NAME` knows (data.fetch.REGISTRY has their sources), named here so that a typo in
# --data NAME is answered without loading the fetch machinery
KNOWN_DATASETS = ("hymenoptera", "catdog", "petimages")
