"""The records catdog returns and writes (run.json, evaluate and predict output, compare rows), in one place.

They are plain JSON-ready dicts (TypedDicts), so `--json`, run.json and compare.json are exactly these.
Torch-free: the CLI renders them and the report reads them without importing the engine.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from typing_extensions import NotRequired, TypedDict

from catdog_cli.core.formatting import printable


class EpochRecord(TypedDict):
    """One line of metrics.csv: train numbers are over the epoch's steps, val numbers over the whole val split."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float  # training only; val_seconds apart
    images_per_sec: float  # training images over the training seconds
    ema_val_loss: NotRequired[float]  # --ema: the averaged weights on val
    ema_val_acc: NotRequired[float]
    val_seconds: float  # validation (of the EMA weights too, with --ema)


ClassMetrics = TypedDict(  # a rate with nothing to count is None (null), and `undefined` says why
    "ClassMetrics",
    {
        "class": str,
        "precision": float | None,
        "recall": float | None,
        "f1": float | None,
        "support": int,
        "undefined": NotRequired[str],
    },
)


class Evaluation(TypedDict):
    split: str
    num_images: int
    accuracy: float
    loss: float
    per_class: list[ClassMetrics]
    confusion: list[list[int]]
    checkpoint: NotRequired[str]  # which weights: "best (epoch 3)" or a checkpoint path


class Heatmap(TypedDict):
    """Where the model looked for its prediction (explain.py): a class-activation map over what it saw.

    `grid` is the map at the feature map's resolution (rows top to bottom, 0..1); `crop` is the share of the
    image's short side that the model saw, as a centered square (the eval resize and center crop).
    """

    grid: list[list[float]]
    crop: float


class TopLoss(TypedDict):
    path: str
    true: str
    pred: str
    confidence: float
    loss: float
    heatmap: NotRequired[Heatmap]  # for the predicted class


class ReliabilityBin(TypedDict):
    """One confidence bin of a reliability diagram: [lo, hi), its images, mean confidence and accuracy."""

    lo: float
    hi: float
    count: int
    confidence: float
    accuracy: float


class Coverage(TypedDict):
    """Accuracy on the images with confidence >= threshold, and the share of images that is (coverage)."""

    threshold: float
    coverage: float
    accuracy: float | None  # None when no image reaches the threshold
    images: int


class Calibration(TypedDict):
    """How well confidence matches accuracy on one split, before (T = 1) and after the model's temperature."""

    temperature: float
    split: str
    images: int
    bins: int
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    reliability_before: list[ReliabilityBin]
    reliability_after: list[ReliabilityBin]
    coverage: list[Coverage]  # at calibration.THRESHOLDS, with the calibrated confidence
    fitted_on: NotRequired[str]  # "val": the split the temperature was fitted on
    in_sample: NotRequired[bool]  # measured on the very images T was fitted on: "after" is optimistic
    not_fitted: NotRequired[str]  # why T stayed 1


class Skipped(TypedDict):
    path: str
    reason: str


class Params(TypedDict):
    total: int
    trainable: int


class TrainResult(TypedDict):
    """run.json and `catdog train --json`."""

    kind: str  # "train"
    config: dict[str, Any]  # the TrainConfig the run really used
    versions: dict[str, str]
    device: str
    precision: str
    threads: int  # torch's intra-op threads (runtime.device.choose_threads)
    threads_why: str  # "--threads", "OMP_NUM_THREADS", or the cores and load it was chosen from
    classes: list[str]
    split_origin: str
    params: Params
    history: list[EpochRecord]
    epochs: int
    best_epoch: int
    best_val_acc: float | None
    interrupted: bool
    skipped: list[Skipped]
    out: str
    images: dict[str, int]  # images used per split
    evaluation: NotRequired[Evaluation]  # the best weights on val
    test: NotRequired[Evaluation]  # the best weights on a labeled test split
    top_losses: NotRequired[list[TopLoss]]
    calibration: NotRequired[Calibration]  # the temperature fitted on val with the best weights (kept in best.pt)
    ood: NotRequired[dict[str, Any]]  # the unknown-image detector fitted on the best weights (kept in best.pt)
    report: NotRequired[str]
    ended: str  # why training ended: all epochs done, early stopping, interrupted
    best_weights: str  # "trained", or "ema" when the EMA's weights did better (--ema)
    train_counts: dict[str, int]  # training images per class (an imbalance is noted above 3x)


class Throughput(TypedDict):
    """How a pass of evaluate or predict ran: wall time of decoding and computing, and images per second."""

    runtime: str  # "torch", "onnxruntime" or "torchscript"
    device: str
    precision: str  # "bf16", "fp16", "fp32" or "int8"
    threads: int  # intra-op threads of torch and of onnxruntime (runtime.device.choose_threads)
    threads_why: str  # as in TrainResult
    seconds: float
    images_per_sec: float


class EvaluateResult(Evaluation, Throughput):
    """`catdog evaluate --json`: the evaluation's numbers at the top level, and what was evaluated."""

    kind: str  # "evaluate"
    data: str
    classes: list[str]
    backbone: str
    params: Params
    config: dict[str, Any]
    versions: dict[str, str]
    evaluation: Evaluation
    top_losses: list[TopLoss]
    skipped: list[Skipped]
    calibration: Calibration  # this split, with the checkpoint's temperature
    selective: NotRequired[Coverage]  # with --min-confidence
    unknown: NotRequired[dict[str, Any]]  # with a detector: kept share, accuracy on kept; --unknown-data's separation
    tta: str | None  # the test-time augmentation views, or None
    report: NotRequired[str]


class TopClass(TypedDict):
    label: str
    confidence: float


class Prediction(TypedDict, total=False):
    """One image of `catdog predict`: a label and its confidence, or the reason it could not be read."""

    path: str
    label: str
    confidence: float
    top: list[TopClass]  # with --top-k K > 1
    error: str
    unsure: bool  # with --min-confidence: confidence below it (the label is kept)
    unknown: bool  # with a detector: the image looks like none of the classes (score past its threshold)
    unknown_score: float
    copied_to: str  # with --sort-into
    explanation: str  # with --explain: the heat-map image written for it


class Parity(TypedDict):
    """An exported file against catdog's own predict, on the same images."""

    images: int
    source: str  # the folder the images came from
    max_abs_diff: float  # largest |probability difference| over every image and class
    label_agreement: float  # share of images with the same top label
    tolerance: float
    passed: bool
    unknown_score_diff: NotRequired[float]  # with a detector: largest relative |unknown score difference|


class QuantCheck(TypedDict):
    """`catdog export --int8`: the int8 file against the fp32 file on the run's val split."""

    images: int
    accuracy_fp32: float
    accuracy_int8: float
    points_lost: float  # accuracy points, 100 * (fp32 - int8)
    label_agreement: float  # share of images with the same top label in both files
    tolerance_points: float
    calibration_images: int  # training images the activation ranges were calibrated on
    passed: bool


class ExportResult(TypedDict):
    """`catdog export --json`."""

    kind: str  # "export"
    checkpoint: str
    format: str  # "onnx" or "torchscript"
    out: str
    bytes: int
    metadata: dict[str, Any]  # what the file carries: classes, the preprocessing contract, temperature
    parity: Parity  # the fp32 graph's, before any quantization
    int8: NotRequired[QuantCheck]


class PredictResult(Throughput):
    """`catdog predict --json`: the predictions in input order, and how fast they came."""

    kind: str  # "predict"
    checkpoint: str
    backbone: str
    predictions: list[Prediction]


class CompareRow(TypedDict):
    """One cell of a compare grid: compare.json's rows, compare.csv, compare.md and the table."""

    backbone: str
    strategy: str
    status: str  # "ok" or "failed"
    error: str | None
    params_total: int | None
    params_trainable: int | None
    best_val_acc: float | None
    best_epoch: int | None
    val_loss: float | None
    test_acc: float | None
    train_seconds: float | None
    images_per_sec: float | None
    history: list[dict[str, Any]]
    cell_seconds: NotRequired[float]


class CompareResult(TypedDict):
    kind: str  # "compare"
    config: dict[str, Any]
    device: str
    world_size: int
    classes: list[str]
    split_origin: str
    versions: dict[str, str]
    out: str
    interrupted: bool
    wall_seconds: float
    best: str | None
    rows: list[CompareRow]
    weights: NotRequired[dict[str, str]]  # per backbone: "default", "none" or a file (older compare.json: none)


class RunSummary(TypedDict):
    """What a run is about to do, told before the work starts (Events.summary): train, or a compare grid."""

    kind: str  # "train", "compare" or "lr-find"
    data: str
    classes: list[str]
    images: dict[str, int]  # image files found per split, before any is decoded
    split_origin: str
    backbones: list[str]
    strategies: list[str]
    weights: dict[str, str]  # per backbone: "default", "none" or a file
    params: dict[str, Params]  # per backbone built so far (train: its one model)
    lr: float | None  # the new head's; None: each strategy's default
    epochs: int
    batch_size: int
    image_size: int | None  # None: each backbone's own
    augment: bool
    device: str
    precision: str
    out: str
    recipe: list[str]  # recipe options set away from their defaults, as typed
    lr_range: NotRequired[tuple[float, float, int]]  # lr-find: the head's lr from, to, over how many steps


def _strict(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return printable(value, controls=False)
    if isinstance(value, dict):
        return {_strict(str(k)): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, os.PathLike):
        return printable(os.fspath(value), controls=False)
    return value


def to_json(value: Any, indent: int | None = 2) -> str:
    """The one way catdog writes JSON (`--json`, run.json, compare.json, cell files): strict, so any parser reads
    it. A number that is not finite becomes null (NaN and Infinity are not JSON); a file name that is not UTF-8 is
    escaped (`\\xNN`, see formatting.printable) instead of failing a finished run."""
    return json.dumps(_strict(value), indent=indent, allow_nan=False, default=str)


class LrCurve(TypedDict):
    """One strategy's learning-rate range test: the head's lr and the loss at each step."""

    strategy: str
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]  # centred moving average of the losses: what the suggestion reads
    suggested_lr: float | None  # halfway down the longest fall of the smoothed loss; None when it never fell
    min_loss_lr: float
    lr_ratio: float  # the backbone's lr is the head's / lr_ratio (discriminative, freeze-unfreeze)
    ended: str


def shown_steps(curve: LrCurve) -> list[int]:
    """The steps a plot of the curve shows: those whose loss stays within 1.5x where the test began (the blown-up
    tail would flatten the rest)."""
    smoothed = curve["smoothed"]
    ceiling = 1.5 * max(smoothed[: max(1, len(smoothed) // 10)])
    return [i for i, v in enumerate(smoothed) if v <= ceiling and curve["losses"][i] <= 2 * ceiling]


class LrFindResult(TypedDict):
    """`catdog lr-find --json` and OUT/lr_find.json."""

    kind: str  # "lr_find"
    config: dict[str, Any]
    classes: list[str]
    device: str
    versions: dict[str, str]
    curves: list[LrCurve]
    out: str
    report: str
