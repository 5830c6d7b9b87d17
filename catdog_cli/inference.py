"""Using a model: the evaluation loop, and a trained checkpoint's evaluate and predict (with their outputs).

`evaluate` is the one eval loop; training calls it every epoch on val, `evaluate_checkpoint` on any split.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from catdog_cli import calibration, checkpoints, distributed
from catdog_cli import report as report_module
from catdog_cli.backbones import TransferModel, count_params
from catdog_cli.config import check_use
from catdog_cli.data import Dataset, Split, default_workers, load_dataset, resolve_data
from catdog_cli.errors import CatdogError
from catdog_cli.events import Events
from catdog_cli.explain import add_heatmaps
from catdog_cli.folders import walk_images
from catdog_cli.formatting import natural_key, printable
from catdog_cli.metrics import confusion_matrix, per_class
from catdog_cli.paths import atomic_write_text, check_folder_target, check_new_file, copy_new, create_new
from catdog_cli.pipeline import BatchSource, Inputs, ThreadedSource
from catdog_cli.records import Calibration, EvaluateResult, Evaluation, Prediction, PredictResult, Throughput, TopLoss
from catdog_cli.runtime import Precision, default_batch_size, resolve_device
from catdog_cli.strategies import STRATEGIES, param_groups
from catdog_cli.tta import TTAModel, with_tta
from catdog_cli.world import World

TOP_LOSSES = 12
UNSURE = "_unsure"  # predict --sort-into: the folder of images below --min-confidence


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


def evaluate(model: TransferModel, source: BatchSource, inputs: Inputs, precision: Precision, num_classes: int,
             events: Events | None = None, world: World = World(), temperature: float = 1.0) -> EvalOutput:
    """The eval loop. The loss is the model's own cross-entropy (training's val loss); confidences are
    softmax(logits / temperature), as predict shows them."""
    model.eval()
    losses, preds, confs, labels, index, all_logits = [], [], [], [], [], []
    with torch.inference_mode():
        for batch in source:
            with precision.autocast():
                logits = model(inputs.model_input(batch))
            logits = logits.float()
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
    return EvalOutput(loss_sum.item() / n, confusion.diagonal().sum().item() / n, confusion.tolist(), n,
                      loss.cpu(), pred.cpu(), torch.cat(confs).cpu(), torch.cat(index).cpu(),
                      torch.cat(all_logits).cpu(), label.cpu())


def evaluation_record(out: EvalOutput, classes: list[str], split: str) -> Evaluation:
    return {"split": split, "num_images": out.num_images, "accuracy": out.accuracy, "loss": out.loss,
            "per_class": per_class(out.confusion, classes), "confusion": out.confusion}


def top_losses(out: EvalOutput, split: Split, classes: list[str], k: int = TOP_LOSSES) -> list[TopLoss]:
    """The most confidently wrong images: what a person should look at first."""
    wrong = (out.preds != torch.tensor([split.labels[i] for i in out.index.tolist()])).nonzero().flatten()
    order = wrong[out.losses[wrong].argsort(descending=True)][:k]
    return [{"path": str(split.paths[out.index[i]]), "true": classes[split.labels[out.index[i]]],
             "pred": classes[out.preds[i]], "confidence": out.confidence[i].item(), "loss": out.losses[i].item()}
            for i in order.tolist()]


@dataclass
class TrainedModel:
    """A checkpoint ready to use: its record, the model on its device, and how to feed it."""

    checkpoint: dict[str, Any]
    model: TransferModel
    inputs: Inputs
    device: torch.device
    precision: Precision

    @classmethod
    def load(cls, path: Path | str, device: str, precision: str = "auto", tta: str | None = None) -> TrainedModel:
        """`precision`: auto, fp32 or bf16 (runtime.Precision); `tta`: a view set of tta.TTA_VIEWS, the model then
        averages its probabilities over those views."""
        dev = resolve_device(device)
        how = Precision(dev, precision)
        ckpt = checkpoints.load(path)
        model = how.prepare(checkpoints.restore_model(ckpt, dev))
        inputs = Inputs(ckpt["image_size"], ckpt["resize"], tuple(ckpt["mean"]), tuple(ckpt["std"]))
        if tta is not None:
            model, inputs = with_tta(model, inputs, tta)
        return cls(ckpt, model, inputs, dev, how)

    @property
    def classes(self) -> list[str]:
        return self.checkpoint["classes"]

    @property
    def temperature(self) -> float:
        return calibration.temperature_of(self.checkpoint)

    @property
    def base(self) -> TransferModel:
        """The trained model itself, without test-time augmentation around it (Grad-CAM, parameter counts)."""
        return self.model.model if isinstance(self.model, TTAModel) else self.model

    def one_pass(self, split: Split, batch_size: int | None, workers: int | None,
                 on_skip: Callable[[Path, str], None] | None = None) -> ThreadedSource:
        """The split in order, decoded in threads while the model computes: one pass keeps nothing resident."""
        return ThreadedSource(split, self.inputs.eval_spec(), batch_size or default_batch_size(self.device),
                              self.device, default_workers() if workers is None else workers, on_skip=on_skip)


@contextmanager
def throughput(trained: TrainedModel, images: int) -> Iterator[Throughput]:
    """How a pass over `images` images ran: device, precision, wall time (decode and compute), img/s."""
    found: Throughput = {"device": str(trained.device), "precision": trained.precision.name, "seconds": 0.0,
                         "images_per_sec": 0.0}
    start = time.perf_counter()
    yield found
    if trained.device.type == "cuda":
        torch.cuda.synchronize(trained.device)
    found["seconds"] = time.perf_counter() - start
    found["images_per_sec"] = images / found["seconds"] if found["seconds"] else 0.0


def evaluate_checkpoint(checkpoint: Path | str, data: str | None = None, split: str = "val",
                        batch_size: int | None = None, device: str = "auto", events: Events | None = None,
                        workers: int | None = None, report: Path | str | None = None,
                        min_confidence: float | None = None, tta: str | None = None,
                        precision: str = "auto") -> EvaluateResult:
    """Accuracy, loss, per-class metrics and confusion of a saved model on one split of a dataset; calibration
    with the checkpoint's temperature; with `min_confidence`, accuracy on the images it is that sure about;
    `tta`: test-time augmentation views.

    A folder without split folders is evaluated whole, unless it is the folder the model was trained on: then
    train and val are the split the run recorded (files added since are left out, files gone are named), so
    training images never count as validation.
    """
    events = events or Events()
    check_use(checkpoint, batch_size=batch_size, device=device, split=split, min_confidence=min_confidence,
              precision=precision)
    if report is not None:
        check_new_file(report, "--report")
    trained = TrainedModel.load(checkpoint, device, precision, tta)
    ckpt, classes = trained.checkpoint, trained.classes
    dataset = _dataset_of(ckpt, data, events)
    if split != "all" and "all" in dataset.splits:
        events.note(f"{dataset.root} has no split folders: evaluating all of it")
        split = "all"
    if split == "all" and "train" in dataset.splits:
        events.note(f"--split all includes the {len(dataset.splits['train'])} training images: its accuracy is not "
                    "an estimate on unseen images (use --split val or test for that)")
    images = dataset.split(split)
    source = trained.one_pass(images, batch_size, workers, on_skip=events.skip)
    events.task(f"evaluating {split}", len(images))
    with throughput(trained, len(images)) as speed:
        out = evaluate(trained.model, source, trained.inputs, trained.precision, len(classes), events,
                       temperature=trained.temperature)
    record = evaluation_record(out, classes, split)
    worst = top_losses(out, images, classes)
    if report is not None:  # where the model looked in each, for the report's thumbnails
        add_heatmaps(trained.base, worst, classes, trained.inputs, trained.device)
    if ckpt.get("strategy") in STRATEGIES:  # trainable: what its strategy trained (freeze: the head alone)
        param_groups(ckpt["strategy"], trained.base)
    total, trainable = count_params(trained.base)
    result: EvaluateResult = {
        "kind": "evaluate", "checkpoint": str(checkpoint), "data": str(dataset.root), "classes": classes,
        "backbone": ckpt["backbone"], "params": {"total": total, "trainable": trainable},
        "config": ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {},
        "versions": checkpoints.versions(), **record, "evaluation": {**record, "checkpoint": str(checkpoint)},
        **speed,
        "top_losses": worst, "tta": tta,
        "skipped": [{"path": str(p), "reason": r} for p, r in source.skipped],
        "left_out": [{"path": str(p), "reason": r} for p, r in dataset.left_out], "missing": dataset.missing,
        "calibration": _calibration_of(out, ckpt, data, split, trained.temperature)}
    if min_confidence is not None:
        result["selective"] = calibration.selective(out.confidence, out.preds == out.labels, min_confidence)
    if report is not None:  # a new file only, even if one appeared while this ran
        create_new(report, lambda tmp: report_module.write_train_report(result, tmp), "--report")
        result["report"] = str(report)
    return result


def _dataset_of(ckpt: dict[str, Any], data: str | None, events: Events) -> Dataset:
    """The data to evaluate on; on the folder the model was trained on, with the split its run recorded."""
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    data = data or ckpt.get("data")
    if not isinstance(data, str) or not data:
        raise CatdogError("this checkpoint does not say what data it was trained on: pass --data")
    trained_here = _trained_on(ckpt, data)
    recorded = ckpt.get("split") if trained_here else None
    if trained_here and not isinstance(recorded, dict):
        events.note("this checkpoint records no split (an older catdog made it): its val split is derived again "
                    "from the files there now, exact only if they have not changed since it trained")
    val_split = config.get("val_split", 0.2) if trained_here else None
    dataset = load_dataset(data, val_split, config.get("seed", 0), classes=ckpt["classes"],
                           recorded=recorded if isinstance(recorded, dict) else None)
    for note in dataset.notes:
        events.note(note)
    return dataset


def _calibration_of(out: EvalOutput, ckpt: dict[str, Any], data: str | None, split: str,
                    temperature: float) -> Calibration:
    """The split's calibration with the checkpoint's temperature, and where that temperature came from."""
    cal = calibration.measure(out.logits, out.labels, temperature, split)
    fitted = ckpt.get("calibration") if isinstance(ckpt.get("calibration"), dict) else {}
    if "not_fitted" in fitted:
        cal["not_fitted"] = fitted["not_fitted"]
    elif fitted:
        cal["fitted_on"] = fitted.get("fitted_on", "val")
        cal["in_sample"] = _trained_on(ckpt, data) and split == cal["fitted_on"]
    return cal


def _trained_on(ckpt: dict[str, Any], data: str | None) -> bool:
    """Whether `data` (None: the checkpoint's own) is the folder the model was trained on."""
    return data is None or str(resolve_data(data).resolve()) == ckpt.get("data")


def collect_images(paths: list[Path | str]) -> list[Path]:
    """Files as given; folders recursed for image files, in natural order (2.jpg before 10.jpg)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(walk_images(p)[0], key=lambda f: natural_key(str(f)))
        elif p.exists():
            found.append(p)
        else:
            raise CatdogError(f"no such file or folder: {p}")
    return found


def classify(checkpoint: Path | str, paths: list[Path | str], top_k: int = 1, batch_size: int | None = None,
             device: str = "auto", events: Events | None = None, workers: int | None = None,
             min_confidence: float | None = None, tta: str | None = None, precision: str = "auto") -> PredictResult:
    """`catdog predict`: the predictions (see `predict`) and how fast they came."""
    events = events or Events()
    check_use(checkpoint, batch_size=batch_size, device=device, top_k=top_k, min_confidence=min_confidence,
              precision=precision)
    trained = TrainedModel.load(checkpoint, device, precision, tta)
    classes, inputs = trained.classes, trained.inputs
    files = collect_images(paths)
    if not files:
        raise CatdogError("no images to classify in " + ", ".join(map(str, paths)))
    k = max(1, min(top_k, len(classes)))
    rows: list[Prediction] = []
    events.task("classifying", len(files))
    unlabeled = Split(files, [0] * len(files))
    source = trained.one_pass(unlabeled, batch_size, workers, on_skip=lambda path, reason: events.advance())
    with throughput(trained, len(files)) as speed, torch.inference_mode():
        for batch in source:
            with trained.precision.autocast():
                logits = trained.model(inputs.model_input(batch)).float()
            probs = (logits / trained.temperature).softmax(1)
            conf, idx = probs.topk(k, dim=1)
            for i, c, j in zip(batch.index.tolist(), conf.tolist(), idx.tolist()):
                row: Prediction = {"path": str(files[i]), "label": classes[j[0]], "confidence": c[0]}
                if top_k > 1:
                    row["top"] = [{"label": classes[a], "confidence": b} for a, b in zip(j, c)]
                if min_confidence is not None:
                    row["unsure"] = c[0] < min_confidence
                rows.append(row)
            events.advance(len(batch))
    rows += [{"path": str(p), "error": reason} for p, reason in source.skipped]
    order = {str(p): n for n, p in enumerate(files)}
    return {"kind": "predict", "checkpoint": str(checkpoint), "backbone": trained.checkpoint["backbone"],
            **speed, "predictions": sorted(rows, key=lambda r: order[r["path"]])}


def predict(checkpoint: Path | str, paths: list[Path | str], top_k: int = 1, batch_size: int | None = None,
            device: str = "auto", events: Events | None = None, workers: int | None = None,
            min_confidence: float | None = None, tta: str | None = None, precision: str = "auto") -> list[Prediction]:
    """One row per image: label and confidence (and the top k), or the reason it could not be read (a folder's
    or a FIFO's too: only regular files are read).

    Confidences are calibrated (softmax of the logits over the checkpoint's temperature). With
    `min_confidence`, every labeled row says whether it is `unsure` (confidence below it); the label is kept.
    """
    return classify(checkpoint, paths, top_k, batch_size, device, events, workers, min_confidence, tta,
                    precision)["predictions"]


def prediction_columns(rows: list[Prediction]) -> list[tuple[str, Callable[[Prediction], Any]]]:
    """The CSV's columns: path, label, confidence, then `unsure` (with --min-confidence) and the 2nd..kth
    classes (with --top-k), then error; each with how a row fills it."""
    columns: list[tuple[str, Callable[[Prediction], Any]]] = [
        ("path", lambda r: r["path"]), ("label", lambda r: r.get("label", "")),
        ("confidence", lambda r: r.get("confidence", ""))]
    if any("unsure" in r for r in rows):
        columns.append(("unsure", lambda r: r.get("unsure", "")))
    for n in range(1, max((len(r.get("top", ())) for r in rows), default=0)):
        columns += [(f"label_{n + 1}", lambda r, n=n: r["top"][n]["label"] if "top" in r else ""),
                    (f"confidence_{n + 1}", lambda r, n=n: r["top"][n]["confidence"] if "top" in r else "")]
    return [*columns, ("error", lambda r: r.get("error", ""))]


def write_predictions_csv(path: Path, rows: list[Prediction], overwrite: bool = False) -> None:
    """A new file only, complete or not at all: an existing one is the user's and stays as it is, unless they
    asked to replace it (`--overwrite`: replaced whole, atomically). Names that are not UTF-8 are written escaped
    (formatting.printable)."""
    columns = prediction_columns(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([name for name, _ in columns])
    for r in rows:
        writer.writerow([printable(v, controls=False) if isinstance(v, str) else v for v in (f(r) for _, f in columns)])
    if overwrite:
        atomic_write_text(path, buffer.getvalue())
        return
    create_new(path, lambda tmp: tmp.write_text(buffer.getvalue(), encoding="utf-8", newline=""), "--csv")


def sort_into_folders(rows: list[Prediction], dest: Path | str) -> int:
    """Copy each classified image into dest/<label>/ (row["copied_to"]); the originals are only read. Rows
    marked unsure (predict's min_confidence) go to dest/_unsure/<label>/ instead, for a person to look at.

    Labels come from the checkpoint, which may not be ours: one that is not a plain folder name is refused.
    """
    dest = Path(dest)
    labels = {r["label"] for r in rows if "label" in r}
    for label in labels:
        if label in ("", ".", "..") or Path(label).name != label or "\\" in label:
            raise CatdogError(f"class name {label!r} is not a safe folder name; refusing to sort into {dest}")
    if UNSURE in labels and any(r.get("unsure") for r in rows):
        raise CatdogError(f"a class is named {UNSURE}, the folder unsure images go to; sort without --min-confidence")
    check_folder_target(dest, "--sort-into")
    for row in rows:
        if "label" not in row:
            continue
        folder = dest / UNSURE / row["label"] if row.get("unsure") else dest / row["label"]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            row["copied_to"] = str(copy_new(Path(row["path"]), folder))
        except OSError as exc:
            raise CatdogError(f"could not copy {row['path']} into {folder}: {exc.strerror or exc}") from None
    return sum("copied_to" in r for r in rows)
