"""Every option that more than one command takes, declared once (huggingface_hub's `_cli_utils.py` shape).

Defaults come from the config's own fields (`TrainConfig`), bounds from `validate.LIMITS` and the per-strategy
learning rates from `defaults.STRATEGIES`, so `--help`, the code and the README cannot drift apart. Help is
grouped into panels: Data, Model, Recipe, Runtime, Output.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path
from typing import Annotated, Any

import typer

from catdog_cli.core.config import TrainConfig
from catdog_cli.core.defaults import DEFAULT_TTA, KNOWN_DATASETS, OOD_METHODS, PRECISIONS, RUNTIMES, STRATEGIES
from catdog_cli.core.validate import LIMITS

DATA, MODEL, RECIPE, RUNTIME, OUTPUT = "Data", "Model", "Recipe", "Runtime", "Output"

# TrainConfig's defaults, by field name: what a command's option defaults to
DEFAULT: dict[str, Any] = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


def low(name: str) -> float:
    """The smallest value `validate.LIMITS` allows for an option (click refuses less, exit code 2)."""
    return LIMITS[name][0]


def _lr_defaults() -> str:
    by_lr: dict[float, list[str]] = {}
    for strategy in STRATEGIES.values():
        by_lr.setdefault(strategy.lr, []).append(strategy.name)
    return "; ".join(f"{lr:g} for {' and '.join(names)}" for lr, names in by_lr.items())


STRATEGY_HELP = (
    "finetune (all layers, one LR), freeze (only the new head), discriminative (backbone at --lr / --lr-ratio, "
    "head at --lr), freeze-unfreeze (--freeze-epochs head only, then as discriminative)."
)
NAMED_DATA_HELP = (
    f"or a dataset's name: one catdog fetch put in the data root, or {', '.join(KNOWN_DATASETS)} (fetched first "
    "when not there yet). A folder of that name here comes first."
)
DATA_HELP = f"A folder (DIR/train/<class>/*, DIR/val/<class>/*, or DIR/<class>/*) {NAMED_DATA_HELP}"
JSON_HELP = "Print one JSON document on stdout and nothing else there."
BACKBONE_HELP = "A torchvision model (resnet34, vgg16_bn, ...) or timm:NAME."


def csv_list(value: str) -> list[str]:
    """A comma-separated option as a list, blanks dropped."""
    return [v.strip() for v in value.split(",") if v.strip()]


# --- Data ---------------------------------------------------------------------------------------------------
Data = Annotated[str, typer.Option(help=DATA_HELP, rich_help_panel=DATA)]
OptionalData = Annotated[str | None, typer.Option(help=DATA_HELP, rich_help_panel=DATA)]
ValSplit = Annotated[
    float,
    typer.Option(
        min=low("val_split"),
        max=LIMITS["val_split"][1],
        help="Val fraction when the data has no val folder.",
        rich_help_panel=DATA,
    ),
]
Seed = Annotated[
    int,
    typer.Option(
        help="Seed for the val split, the head's init, shuffling and augmentation (0 to 4294967295).",
        rich_help_panel=DATA,
    ),
]
Augment = Annotated[bool, typer.Option(help="RandomResizedCrop + flip on training images.", rich_help_panel=DATA)]

# --- Model --------------------------------------------------------------------------------------------------
Backbone = Annotated[str, typer.Option(help=BACKBONE_HELP, rich_help_panel=MODEL)]
Strategy = Annotated[str, typer.Option(help=STRATEGY_HELP, rich_help_panel=MODEL)]
Strategies = Annotated[
    str,
    typer.Option(help="Comma-separated strategies (freeze-unfreeze too, when named).", rich_help_panel=MODEL),
]
Weights = Annotated[
    str,
    typer.Option(
        help="default (ImageNet, downloaded once), none (random init), or PATH: a "
        "state dict, or a catdog checkpoint (runs/x/best.pt) to start a new run from.",
        rich_help_panel=MODEL,
    ),
]
ImageSize = Annotated[
    int | None,
    typer.Option(min=low("image_size"), help="Crop size fed to the model (default 224).", rich_help_panel=MODEL),
]
ModelArg = Annotated[Path, typer.Argument(help="A checkpoint written by train (best.pt).")]
UseModelArg = Annotated[
    Path, typer.Argument(help="A checkpoint written by train (best.pt), or a file export wrote (.onnx, .torchscript).")
]

# --- Recipe -------------------------------------------------------------------------------------------------
# the training recipe (benchmarks/README.md: what each did on real data)
Epochs = Annotated[
    int, typer.Option(min=low("epochs"), help="Passes over the training images.", rich_help_panel=RECIPE)
]
BatchSize = Annotated[
    int | None,
    typer.Option(
        min=low("batch_size"), help="Images per step (default 32 on CPU, 64 on CUDA).", rich_help_panel=RECIPE
    ),
]
LearningRate = Annotated[
    float | None,
    typer.Option(help=f"Learning rate of the new head (default: {_lr_defaults()}).", rich_help_panel=RECIPE),
]
LrRatio = Annotated[
    float, typer.Option(help="discriminative: how many times slower the backbone learns.", rich_help_panel=RECIPE)
]
FreezeEpochs = Annotated[
    int,
    typer.Option(
        min=low("freeze_epochs"), help="freeze-unfreeze: epochs that train the head alone.", rich_help_panel=RECIPE
    ),
]
Patience = Annotated[
    int | None,
    typer.Option(
        min=low("patience"),
        help="Stop after N epochs without a better val accuracy (ties: lower val loss); default: never.",
        rich_help_panel=RECIPE,
    ),
]
LabelSmoothing = Annotated[
    float,
    typer.Option(
        min=low("label_smoothing"),
        max=LIMITS["label_smoothing"][1],
        help="Label smoothing of the loss (e.g. 0.1).",
        rich_help_panel=RECIPE,
    ),
]
Mixup = Annotated[
    float,
    typer.Option(
        min=low("mixup"),
        help="MixUp: blend image pairs and their labels, weight ~ Beta(A, A) (e.g. 0.2); 0: off.",
        rich_help_panel=RECIPE,
    ),
]
Cutmix = Annotated[
    float,
    typer.Option(
        min=low("cutmix"),
        help="CutMix: paste a box of another image, labels by area, ~ Beta(A, A) (e.g. 1.0); 0: off. "
        "With --mixup too, each batch uses one of them.",
        rich_help_panel=RECIPE,
    ),
]
Ema = Annotated[
    bool,
    typer.Option(
        help="Also keep an exponential moving average of the weights; best.pt takes it when it scores better on val.",
        rich_help_panel=RECIPE,
    ),
]
EmaDecay = Annotated[
    float,
    typer.Option(help="--ema: decay per step (warmed up: min(decay, (1+n)/(10+n))).", rich_help_panel=RECIPE),
]
Balance = Annotated[
    bool,
    typer.Option(
        help="Imbalanced classes: draw training images with inverse-frequency class weights, so each class comes "
        "about equally often.",
        rich_help_panel=RECIPE,
    ),
]
Ood = Annotated[
    str,
    typer.Option(
        help=f"The unknown-image detector fitted at the end ({', '.join(OOD_METHODS)}, or none): it marks images of "
        "neither class as unknown in predict and evaluate.",
        rich_help_panel=MODEL,
    ),
]
OodKeep = Annotated[
    float,
    typer.Option(
        min=low("ood_keep"),
        max=LIMITS["ood_keep"][1],
        help="The share of val images the detector's threshold keeps (set on them alone, never on unknown images).",
        rich_help_panel=MODEL,
    ),
]

# --- Runtime ------------------------------------------------------------------------------------------------
Device = Annotated[str, typer.Option(help="auto (CUDA if available), cpu, or cuda[:N].", rich_help_panel=RUNTIME)]
Precision = Annotated[
    str,
    typer.Option(
        "--precision",
        help=f"{', '.join(PRECISIONS)}. auto: bf16 autocast + channels_last on GPUs and on CPUs that "
        "do bf16 natively (AVX512-BF16, AMX), else fp32 (fp16 on GPUs without bf16).",
        rich_help_panel=RUNTIME,
    ),
]
Runtime = Annotated[
    str,
    typer.Option(
        help=f"{', '.join(RUNTIMES)}. auto: a checkpoint on the CPU runs in onnxruntime through an export catdog makes "
        "once and caches beside it (.catdog-cache/), elsewhere in PyTorch; an exported file in its own runtime.",
        rich_help_panel=RUNTIME,
    ),
]
CacheGib = Annotated[
    float | None,
    typer.Option(
        help="Memory for decoded images (default: half the free GPU memory or a quarter of RAM); "
        "larger datasets are decoded per batch (0: always).",
        rich_help_panel=RUNTIME,
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(
        help="Decoding threads/processes (default: one per core; 0 decodes in the main process).",
        rich_help_panel=RUNTIME,
    ),
]
Compile = Annotated[
    bool,
    typer.Option("--compile", help="torch.compile the model (slow start, faster steps).", rich_help_panel=RUNTIME),
]
UseBatchSize = Annotated[
    int | None, typer.Option(min=low("batch_size"), help="Images per batch.", rich_help_panel=RUNTIME)
]

# --- using a trained model ----------------------------------------------------------------------------------
MinConfidence = Annotated[
    float | None,
    typer.Option(
        min=low("min_confidence"),
        max=LIMITS["min_confidence"][1],
        help="A calibrated confidence (0-1) below which a prediction counts as unsure.",
    ),
]
Unknown = Annotated[
    bool,
    typer.Option(
        help="Mark images of neither class as unknown (the checkpoint's detector: the features are far from every "
        "training image). Distinct from unsure: that is one of the classes, not sure which."
    ),
]
Tta = Annotated[
    bool,
    typer.Option(
        help=f"Test-time augmentation ({DEFAULT_TTA}): average the probabilities over the centre and four corner "
        "crops of the eval resize, each also mirrored (10 passes: slower)."
    ),
]

# --- Output -------------------------------------------------------------------------------------------------
Json = Annotated[bool, typer.Option("--json", help=JSON_HELP, rich_help_panel=OUTPUT)]
Name = Annotated[
    str | None,
    typer.Option(
        help="Name the run: its folder is runs/<command>/NAME (NAME2, ... when taken).", rich_help_panel=OUTPUT
    ),
]
# experiment tracking (catdog_cli/tracking): train, compare, lr-find
Log = Annotated[
    list[str] | None,
    typer.Option(
        "--log",
        metavar="TRACKER",
        help="Also log the run to mlflow and/or tensorboard (repeat for both); needs pip install "
        "'catdog-cli\\[mlflow]' or '\\[tensorboard]'. A tracker that fails costs a warning, never the run.",
        rich_help_panel=OUTPUT,
    ),
]
LogUri = Annotated[
    str | None,
    typer.Option(
        help="--log mlflow: the tracking server or store (default $MLFLOW_TRACKING_URI, or runs/mlflow.db).",
        rich_help_panel=OUTPUT,
    ),
]
LogModel = Annotated[
    bool, typer.Option(help="--log mlflow: also store best.pt as an artifact.", rich_help_panel=OUTPUT)
]
