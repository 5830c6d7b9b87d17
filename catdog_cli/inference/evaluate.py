"""The eval loop (`evaluate`: training calls it every epoch on val) and `evaluate_checkpoint` on any split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from catdog_cli.core.events import Events
from catdog_cli.core.files import create_new
from catdog_cli.core.paths import resolve_data
from catdog_cli.core.records import (
    Calibration,
    EvaluateResult,
    Evaluation,
    TopLoss,
)
from catdog_cli.core.validate import Checked, check_use
from catdog_cli.core.world import World
from catdog_cli.data.dataset import Dataset, Split, found_recorded, holds_recorded, load_dataset
from catdog_cli.data.decode import ImageBatch
from catdog_cli.data.folders import collect_images
from catdog_cli.data.presets import Preset
from catdog_cli.data.sources import BatchSource
from catdog_cli.errors import CatdogError
from catdog_cli.inference import calibration, ood
from catdog_cli.inference.explain import add_heatmaps
from catdog_cli.inference.fastpath import for_images, open_runner
from catdog_cli.inference.metrics import confusion_matrix, per_class
from catdog_cli.inference.runtimes import LOGITS, SCORE, Runner, throughput
from catdog_cli.models import checkpoints
from catdog_cli.models.transfer import TransferModel
from catdog_cli.reporting import run_report
from catdog_cli.runtime import distributed
from catdog_cli.runtime.device import Precision

TOP_LOSSES = 12


@dataclass
class EvalOutput:
    loss: float
    accuracy: float
    confusion: list[list[int]]
    num_images: int
    losses: torch.Tensor  # per image, in split order (CPU)
    preds: torch.Tensor
    confidence: torch.Tensor  # with the temperature evaluate was given
    index: torch.Tensor
    logits: torch.Tensor  # float32, before any temperature: what calibration fits and measures
    labels: torch.Tensor


def evaluate(
    model: TransferModel,
    source: BatchSource,
    preset: Preset,
    precision: Precision,
    num_classes: int,
    events: Events | None = None,
    world: World = World(),
    temperature: float = 1.0,
) -> EvalOutput:
    """The eval loop. The loss is the model's own cross-entropy (training's val loss); confidences are
    softmax(logits / temperature), as predict shows them."""
    model.eval()

    def forward(batch: ImageBatch) -> torch.Tensor:
        with precision.autocast():
            return model(preset.model_input(batch)).float()

    return evaluate_logits(forward, source, num_classes, events, world, temperature)


def evaluate_logits(
    forward: Callable[[ImageBatch], torch.Tensor],
    source: BatchSource,
    num_classes: int,
    events: Events | None = None,
    world: World = World(),
    temperature: float = 1.0,
) -> EvalOutput:
    """The eval loop over any runner's logits (`forward`: a batch -> float32 logits)."""
    losses, preds, confs, labels, index, all_logits = [], [], [], [], [], []
    with torch.inference_mode():
        for batch in source:
            logits = forward(batch)
            losses.append(F.cross_entropy(logits, batch.labels, reduction="none"))
            all_logits.append(logits)
            conf, pred = (logits / temperature).softmax(1).max(1)
            preds.append(pred)
            confs.append(conf)
            labels.append(batch.labels)
            index.append(batch.index)
            if events:
                events.advance(len(batch))
    if not losses:  # every file of a streamed split was unreadable
        raise CatdogError("no readable images to evaluate")
    loss, pred, label = torch.cat(losses), torch.cat(preds), torch.cat(labels)
    # under torchrun each rank saw its shard: sums over ranks give the whole split's numbers
    confusion = distributed.all_sum(confusion_matrix(label, pred, num_classes), world)
    loss_sum = distributed.all_sum(loss.double().sum(), world)
    n = int(confusion.sum())
    return EvalOutput(
        loss_sum.item() / n,
        confusion.diagonal().sum().item() / n,
        confusion.tolist(),
        n,
        loss.cpu(),
        pred.cpu(),
        torch.cat(confs).cpu(),
        torch.cat(index).cpu(),
        torch.cat(all_logits).cpu(),
        label.cpu(),
    )


def evaluation_record(out: EvalOutput, classes: list[str], split: str) -> Evaluation:
    return {
        "split": split,
        "num_images": out.num_images,
        "accuracy": out.accuracy,
        "loss": out.loss,
        "per_class": per_class(out.confusion, classes, split),
        "confusion": out.confusion,
    }


def top_losses(out: EvalOutput, split: Split, classes: list[str], k: int = TOP_LOSSES) -> list[TopLoss]:
    """The most confidently wrong images: what a person should look at first."""
    wrong = (out.preds != torch.tensor([split.labels[i] for i in out.index.tolist()])).nonzero().flatten()
    order = wrong[out.losses[wrong].argsort(descending=True)][:k]
    return [
        {
            "path": str(split.paths[out.index[i]]),
            "true": classes[split.labels[out.index[i]]],
            "pred": classes[out.preds[i]],
            "confidence": out.confidence[i].item(),
            "loss": out.losses[i].item(),
        }
        for i in order.tolist()
    ]


def evaluate_checkpoint(
    checkpoint: Path | str | Checked[Path | str],
    data: str | None = None,
    split: str = "val",
    batch_size: int | None = None,
    device: str = "auto",
    events: Events | None = None,
    workers: int | None = None,
    report: Path | str | None = None,
    min_confidence: float | None = None,
    tta: str | None = None,
    precision: str = "auto",
    unknown_data: Path | str | None = None,
    runtime: str = "auto",
) -> EvaluateResult:
    """Accuracy, loss, per-class metrics and confusion of a saved model on one split of a dataset; calibration
    with the checkpoint's temperature; with `min_confidence`, accuracy on the images it is that sure about;
    `tta`: test-time augmentation views. With the checkpoint's unknown-image detector: the share of the split it
    keeps and the accuracy on those; `unknown_data`, a folder of images of neither class, adds how well the
    detector tells them apart (AUROC, FPR at 95 % kept, the share it catches).
    `checkpoint` may also be a file `catdog export` wrote (pass `data`); `runtime`: auto, torch or onnxruntime
    (fastpath.open_runner; a checkpoint with a detector runs in PyTorch here). The arguments are checked here,
    unless `checkpoint` comes checked with them (`check_use`: the CLI checks before torch loads).

    A folder without split folders is evaluated whole, unless it is the folder the model was trained on: then
    train and val are the split the run recorded (files added since are left out, files gone are named), so
    training images never count as validation.
    """
    events = events or Events()
    if not isinstance(checkpoint, Checked):
        checkpoint = check_use(
            checkpoint,
            batch_size=batch_size,
            device=device,
            split=split,
            min_confidence=min_confidence,
            precision=precision,
            runtime=runtime,
            tta=tta is not None,
            data=data,
            report=report,
        )
    runner = open_runner(checkpoint.given, device, precision, tta, runtime)
    detector = runner.unknown_detector()
    if unknown_data is not None and detector is None:
        raise CatdogError(f"--unknown-data needs a detector, and {ood.NO_DETECTOR.removeprefix('this ')}")
    dataset, trained_here = _dataset_of(runner.record, data, checkpoint.data, events)
    split = _split_to_evaluate(dataset, split, events)
    images = dataset.split(split)
    runner = for_images(runner, images.paths, events)
    source = runner.one_pass(images, batch_size, workers, on_skip=events.skip)
    events.task(f"evaluating {split}", len(images))
    with throughput(runner, len(images)) as speed:
        out, scores = _scored_pass(runner, source, len(runner.classes), events)
    record, worst = evaluation_record(out, runner.classes, split), top_losses(out, images, runner.classes)
    if report is not None:  # where the model looked, for the report's thumbnails (Grad-CAM)
        _add_heatmaps(runner, worst)
    result: EvaluateResult = {
        "kind": "evaluate",
        "checkpoint": str(checkpoint.given),
        "data": str(dataset.root),
        **_model_record(runner),
        **record,
        "evaluation": {**record, "checkpoint": str(checkpoint.given)},
        **speed,
        "top_losses": worst,
        "tta": tta,
        "skipped": [{"path": str(p), "reason": r} for p, r in source.skipped],
        "left_out": [{"path": str(p), "reason": r} for p, r in dataset.left_out],
        "missing": dataset.missing,
        "calibration": _calibration_of(out, runner.record, trained_here, split, runner.temperature),
    }
    if min_confidence is not None:
        result["selective"] = calibration.selective(out.confidence, out.preds == out.labels, min_confidence)
    if detector is not None:
        result["unknown"] = unknown_record(
            detector, runner, out, scores, split, unknown_data, batch_size, workers, events
        )
    if report is not None:  # a new file only, even if one appeared while this ran
        create_new(report, lambda tmp: run_report.write_train_report(result, tmp), "--report")
        result["report"] = str(report)
    return result


def _split_to_evaluate(dataset: Dataset, split: str, events: Events) -> str:
    """The split asked for, or "all" for a folder without split folders; a note when it holds training images."""
    if split != "all" and "all" in dataset.splits:
        events.note(f"{dataset.root} has no split folders: evaluating all of it")
        split = "all"
    if split == "all" and "train" in dataset.splits:
        events.note(
            f"--split all includes the {len(dataset.splits['train'])} training images: its accuracy is not "
            "an estimate on unseen images (use --split val or test for that)"
        )
    return split


def _model_record(runner: Runner) -> dict[str, Any]:
    """What model was evaluated: its classes, backbone, parameters, training config, and the library versions."""
    ckpt = runner.record
    return {
        "classes": runner.classes,
        "backbone": runner.backbone,
        "params": runner.params(),
        "config": ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {},
        "versions": checkpoints.versions(),
    }


def _add_heatmaps(runner: Runner, worst: list[TopLoss]) -> None:
    """Grad-CAM of the worst images by the runner's own PyTorch model (none for a user's exported file)."""
    trained = runner.trained()
    if trained is not None:
        add_heatmaps(trained.base, worst, runner.classes, trained.base_preset, trained.device)


def _scored_pass(
    runner: Runner, source: BatchSource, num_classes: int, events: Events
) -> tuple[EvalOutput, torch.Tensor]:
    """The eval loop over a runner, and the unknown-image detector's scores where it gives them (else empty)."""
    scores: list[torch.Tensor] = []

    def forward(batch: ImageBatch) -> torch.Tensor:
        found = runner.outputs(batch)
        if SCORE in found:
            scores.append(found[SCORE])
        return found[LOGITS]

    out = evaluate_logits(forward, source, num_classes, events, temperature=runner.temperature)
    return out, torch.cat(scores) if scores else torch.empty(0)


EXAMPLES = 6  # caught and missed images of --unknown-data the report shows


def unknown_record(
    detector: dict[str, Any],
    runner: Runner,
    out: EvalOutput,
    scores: torch.Tensor,
    split: str,
    unknown_data: Path | str | None,
    batch_size: int | None,
    workers: int | None,
    events: Events,
) -> dict[str, Any]:
    """The detector (`ood.summary`) on the evaluated split (the share kept, the accuracy on them); with
    `unknown_data`, on those images too: AUROC, FPR at 95 % kept (the threshold keeping 95 % of this split), the
    share past the model's threshold, and the most and least unknown-looking of them for the report. The scores are
    the runner's `unknown_score` output: a checkpoint's or an exported file's alike."""
    if len(scores) != len(out.preds):
        raise CatdogError("the model has an unknown-image detector in its record but gives no unknown score")
    threshold = detector["threshold"]
    kept, right = scores <= threshold, out.preds == out.labels
    record: dict[str, Any] = {
        **detector,
        "split": split,
        "kept": kept.double().mean().item(),
        "accuracy_kept": right[kept].double().mean().item() if kept.any() else None,
        "accuracy_all": out.accuracy,
        "scores": {split: scores.tolist()},
    }
    if unknown_data is None:
        return record
    files = collect_images([unknown_data])
    if not files:
        raise CatdogError(f"no images in --unknown-data {unknown_data}")
    source = runner.one_pass(Split(files, [0] * len(files)), batch_size, workers, on_skip=events.skip)
    events.task("scoring --unknown-data", len(files))
    seen, found = _scored_pass(runner, source, len(runner.classes), events)
    order = found.argsort(descending=True).tolist()
    caught = [i for i in order if found[i] > threshold]
    missed = [i for i in reversed(order) if found[i] <= threshold]

    def example(i: int) -> dict[str, Any]:
        return {"path": str(files[seen.index[i]]), "label": runner.classes[seen.preds[i]], "score": found[i].item()}

    return record | {
        "unknown_data": str(unknown_data),
        "unknown_images": len(found),
        **ood.separation(scores, found, threshold),
        "scores": {split: scores.tolist(), "unknown data": found.tolist()},
        "caught_examples": [example(i) for i in caught[:EXAMPLES]],
        "missed_examples": [example(i) for i in missed[:EXAMPLES]],
    }


def _dataset_of(ckpt: dict[str, Any], data: str | None, root: Path | None, events: Events) -> tuple[Dataset, bool]:
    """The data to evaluate on (`data`, which the checks resolved to `root`; else the data the model was trained
    on), and whether it is the data the model was trained on (then with the split its run recorded)."""
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    data = data or ckpt.get("data")
    if not isinstance(data, str) or not data:
        raise CatdogError("this checkpoint does not say what data it was trained on: pass --data")
    root = resolve_data(data) if root is None else root
    recorded = ckpt.get("split") if isinstance(ckpt.get("split"), dict) else None
    trained_here = _trained_on(ckpt, root, recorded, events)
    if trained_here and recorded is None:
        events.note(
            "this checkpoint records no split (an older catdog made it): its val split is derived again "
            "from the files there now, exact only if they have not changed since it trained"
        )
    val_split = config.get("val_split", 0.2) if trained_here else None
    dataset = load_dataset(
        data,
        val_split,
        config.get("seed", 0),
        classes=ckpt["classes"],
        recorded=recorded if trained_here else None,
        root=root,
    )
    for note in dataset.notes:
        events.note(note)
    return dataset, trained_here


def _trained_on(ckpt: dict[str, Any], root: Path, recorded: dict[str, Any] | None, events: Events) -> bool:
    """Whether the folder `root` is the one the model was trained on: the path its run saw, or a copy or move of it
    (found by the recorded split's relative paths, not by where it is). A partial copy is named: its images trained
    the model."""
    if str(root.resolve()) == ckpt.get("data"):
        return True
    if recorded is None:
        return False
    if holds_recorded(root, recorded):
        events.note(
            f"{root} holds the files the model was trained and validated on ({ckpt.get('data')}), copied or moved: "
            "the split its run recorded applies"
        )
        return True
    if seen := found_recorded(root, recorded, ("train",)):
        events.note(
            f"{seen} file(s) in {root} are at the relative path of one of the model's training images (copied from "
            f"{ckpt.get('data')}?): if so, the accuracy counts images it was trained on"
        )
    return False


def _calibration_of(
    out: EvalOutput, ckpt: dict[str, Any], trained_here: bool, split: str, temperature: float
) -> Calibration:
    """The split's calibration with the checkpoint's temperature, and where that temperature came from."""
    cal = calibration.measure(out.logits, out.labels, temperature, split)
    fitted = ckpt.get("calibration") if isinstance(ckpt.get("calibration"), dict) else {}
    if "not_fitted" in fitted:
        cal["not_fitted"] = fitted["not_fitted"]
    elif fitted:
        cal["fitted_on"] = fitted.get("fitted_on", "val")
        cal["in_sample"] = trained_here and split == cal["fitted_on"]
    return cal
