"""What follows the last epoch (Ultralytics' `final_eval`): the best weights evaluated, calibrated, reported."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from catdog_cli.core.events import Events
from catdog_cli.core.files import atomic_write_text
from catdog_cli.core.records import EpochRecord, TrainResult, to_json
from catdog_cli.data.balance import class_counts
from catdog_cli.data.dataset import split_summary
from catdog_cli.data.sources import ThreadedSource
from catdog_cli.inference import calibration, ood
from catdog_cli.inference.evaluate import (
    TOP_LOSSES,
    evaluate,
    evaluation_record,
    top_losses,
)
from catdog_cli.inference.explain import add_heatmaps
from catdog_cli.models import checkpoints
from catdog_cli.models.transfer import count_params
from catdog_cli.reporting.run_report import write_train_report
from catdog_cli.runtime import distributed
from catdog_cli.runtime.device import Precision, threads_record
from catdog_cli.training.features import CachedFeatures
from catdog_cli.training.setup import Run


def write_metrics_csv(path: Path, history: list[EpochRecord]) -> None:
    if not history:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buffer.getvalue())


def recipe_record(run: Run, interrupted: bool) -> dict[str, Any]:
    """How the run ended, which weights are best.pt, and the training images per class."""
    state, classes = run.state, run.dataset.classes
    return {
        "ended": "interrupted" if interrupted else state.ended or f"completed all {run.config.epochs} epochs",
        "best_weights": "ema" if state.best_is_ema else "trained",
        "train_counts": dict(zip(classes, class_counts(run.dataset.splits["train"].labels, len(classes)))),
    }


def summarize(
    run: Run,
    out: Path,
    best_state: dict[str, torch.Tensor] | None,
    interrupted: bool,
    final_splits: tuple[str, ...] = ("val", "test"),
) -> TrainResult:
    """Evaluate the best weights on val (and test), with the top losses: the numbers a person decides from."""
    classes, state = run.dataset.classes, run.state
    total, trainable = count_params(run.model)
    skipped = run.sources.skipped
    left_out = {p for p, _ in skipped}
    result: TrainResult = {
        "kind": "train",
        "config": asdict(run.config),
        "versions": checkpoints.versions(),
        "device": str(run.device),
        "precision": run.precision.name,
        **threads_record(),
        "classes": classes,
        "split_origin": run.dataset.origin,
        "params": {"total": total, "trainable": trainable},
        "history": state.history,
        "epochs": state.epoch,
        "best_epoch": state.best_epoch,
        "best_val_acc": state.best_val_acc if state.history else None,
        "interrupted": interrupted,
        "skipped": [{"path": str(p), "reason": r} for p, r in skipped],
        "out": str(out),
        "images": {name: sum(p not in left_out for p in split.paths) for name, split in run.dataset.splits.items()},
    }
    if best_state is None:
        return result
    run.model.load_state_dict(best_state)
    which = f"best (epoch {state.best_epoch}{', EMA weights' if state.best_is_ema else ''})"
    for name, source in (("val", run.sources.val), ("test", run.sources.test)):
        if source is None or name not in final_splits:
            continue
        net, preset = run.evaluable(run.model) if name == "val" else (run.model, run.preset)
        ev = evaluate(net, source, preset, run.precision, len(classes), world=run.world)
        result["evaluation" if name == "val" else "test"] = {
            **evaluation_record(ev, classes, name),
            "checkpoint": which,
        }
        if name == "val":  # each rank names its shard's worst; rank 0 keeps the worst overall
            result["calibration"] = calibration.calibrate(ev.logits, ev.labels, run.world)
            ev.confidence = calibration.confidence(ev.logits, result["calibration"]["temperature"])  # as predict
            shards = distributed.gather(top_losses(ev, run.sources.splits["val"], classes), run.world)
            found = [t for part in shards for t in part]
            result["top_losses"] = sorted(found, key=lambda t: -t["loss"])[:TOP_LOSSES]
            if run.world.main:  # where the model looked in each, for the report
                add_heatmaps(run.model, result["top_losses"], classes, run.preset, run.device)
    return result


def fit_unknown_detector(run: Run) -> ood.Detector | None:
    """The unknown-image detector of the best weights (loaded by `summarize`): fitted on train's features (eval
    crops: those freeze cached, else one pass, also for finetune, whose backbone moved), its threshold set on val's
    to keep --ood-keep of them. Under torchrun each rank passes over its shard; the shards are gathered and every
    rank fits the same detector on all of them (deterministic), rank 0 alone writes it. None with --ood none."""
    if run.config.ood == "none":
        return None
    start = time.perf_counter()
    model, n = run.model, len(run.dataset.classes)
    precision = Precision.for_inference(run.device)  # the scores predict will compare with the threshold: fp32
    with ood.tapped(model.head) as tap:
        if isinstance(getattr(run.preprocess, "__self__", None), CachedFeatures):  # freeze cached them: reused
            features, labels = run.sources.train.batch.images, run.sources.train.batch.labels
        else:  # quietly: train's unreadable files were named when it was decoded
            quiet = replace(run.loader, events=Events())
            train = ThreadedSource(run.sources.splits["train"], run.preset.eval_spec(), quiet)
            labels = evaluate(model, train, run.preset, precision, n, world=run.world).labels
            features = tap.take()[0]
        net, preset = run.evaluable(model)
        evaluate(net, run.sources.val, preset, precision, n, world=run.world)
        val = tap.take()
    shards = distributed.gather((features.cpu(), labels, val[0].cpu(), val[1].cpu()), run.world)
    joined = [torch.cat([s[i] for s in shards]) for i in range(4)]
    found = ood.fit(run.config.ood, (joined[0], joined[1]), (joined[2], joined[3]), n, model.head, run.config.ood_keep)
    found.record["seconds"] = time.perf_counter() - start  # what it adds to training
    return found


def final_eval(
    run: Run,
    out: Path,
    best_state: dict[str, torch.Tensor] | None,
    interrupted: bool,
    final_splits: tuple[str, ...],
    writes: bool,
) -> TrainResult:
    """After the last epoch: the best weights evaluated and calibrated, the temperature into best.pt, the report
    and run.json (`writes`: this process saves the run's files; compare's cells write none)."""
    result = summarize(run, out, best_state, interrupted, final_splits)
    # a train run's best weights (not compare's cells, which evaluate test alone) get an unknown-image detector
    detector = fit_unknown_detector(run) if best_state is not None and "val" in final_splits else None
    found = {"ood": dict(detector.record)} if detector is not None else {}
    if writes and "calibration" in result:  # best.pt carries the temperature evaluate, predict and export use
        extra = {"ood": detector.checkpoint_entry()} if detector is not None else {}
        checkpoints.update(out / "best.pt", calibration=calibration.checkpoint_entry(result["calibration"]), **extra)
    recipe = recipe_record(run, interrupted)
    if writes:  # a train run (compare's cells have one report for the grid)
        result["report"] = str(write_train_report({**result, **recipe, **found}, out / "report.html"))
    result["split"] = split_summary(run.split)  # last: the keys before it keep their places
    result |= recipe  # after the keys scripts already read: those keep their places
    result |= found  # newer still: the unknown-image detector
    if run.world.main:
        atomic_write_text(out / "run.json", to_json(result))
    return result
