"""`catdog predict`: classify images or folders with a trained model; the CSV and `--sort-into`."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from catdog_cli.core.events import Events
from catdog_cli.core.files import atomic_write_text, copy_new, create_new
from catdog_cli.core.formatting import printable
from catdog_cli.core.paths import check_folder_target
from catdog_cli.core.records import Prediction, PredictResult
from catdog_cli.core.validate import Checked, check_use
from catdog_cli.data.dataset import Split
from catdog_cli.data.decode import ImageBatch
from catdog_cli.data.folders import gather_images, ignored
from catdog_cli.errors import CatdogError
from catdog_cli.inference import ood
from catdog_cli.inference.explain import explain_predictions
from catdog_cli.inference.fastpath import for_images, open_runner
from catdog_cli.inference.runtimes import LOGITS, SCORE, Runner, throughput

UNSURE = "_unsure"  # predict --sort-into: the folder of images below --min-confidence
UNKNOWN = "_unknown"  # predict --sort-into: the folder of images of neither class (the detector's unknown)


def classify(
    checkpoint: Path | str | Checked[Path | str],
    paths: list[Path | str],
    top_k: int = 1,
    batch_size: int | None = None,
    device: str = "auto",
    events: Events | None = None,
    workers: int | None = None,
    min_confidence: float | None = None,
    tta: str | None = None,
    precision: str = "auto",
    unknown: bool = True,
    runtime: str = "auto",
    explain: Path | None = None,
) -> PredictResult:
    """`catdog predict`: the predictions (see `predict`) and how fast they came. `checkpoint` may also be a file
    `catdog export` wrote; `runtime`: auto, torch or onnxruntime (fastpath.open_runner). `explain`: a folder for a
    heat-map picture of each image, by the model that predicted it (explain_predictions). The arguments are checked
    here, unless `checkpoint` comes checked with them (`check_use`: the CLI checks before torch loads)."""
    events = events or Events()
    if not isinstance(checkpoint, Checked):
        checkpoint = check_use(
            checkpoint,
            batch_size=batch_size,
            device=device,
            top_k=top_k,
            min_confidence=min_confidence,
            precision=precision,
            runtime=runtime,
            tta=tta is not None,
            explain=explain is not None,
        )
    listed, unread = gather_images(paths)
    files = [p for p in listed if p not in unread]
    if not files:
        why = "".join(f"; {p}: {reason}" for p, reason in list(unread.items())[:3])
        raise CatdogError("no images to classify in " + ", ".join(map(str, paths)) + why)
    runner = for_images(open_runner(checkpoint.given, device, precision, tta, runtime), files, events)
    detector = runner.unknown_detector() if unknown else None
    if unknown and detector is None:
        events.note(ood.NO_DETECTOR)
    events.task("classifying", len(files))
    unlabeled = Split(files, [0] * len(files))
    source = runner.one_pass(unlabeled, batch_size, workers, on_skip=lambda path, reason: events.advance())
    rows: list[Prediction] = []
    with throughput(runner, len(files)) as speed:
        for batch in source:
            rows += _rows(runner, batch, files, top_k, min_confidence, detector)
            events.advance(len(batch))
    rows += [{"path": str(p), "error": reason} for p, reason in [*source.skipped, *unread.items()]]
    order = {str(p): n for n, p in enumerate(listed)}
    rows.sort(key=lambda r: order[r["path"]])
    if explain is not None:  # by the model that predicted (check_use lets --explain through for a checkpoint only)
        explain_predictions(runner.trained(), rows, explain, batch_size, events)
    return {
        "kind": "predict",
        "checkpoint": str(checkpoint.given),
        "backbone": runner.backbone,
        **speed,
        "predictions": rows,
    }


def _rows(
    runner: Runner,
    batch: ImageBatch,
    files: list[Path],
    top_k: int,
    min_confidence: float | None,
    detector: dict[str, Any] | None,
) -> list[Prediction]:
    """A batch's rows: label and calibrated confidence, the top k, unsure below `min_confidence`, and with the
    `detector` unknown past its threshold (each with its score)."""
    classes, found = runner.classes, runner.outputs(batch)
    probs = (found[LOGITS] / runner.temperature).softmax(1)
    conf, idx = probs.topk(max(1, min(top_k, len(classes))), dim=1)
    scores = found[SCORE].tolist() if detector is not None else [None] * len(batch)
    rows: list[Prediction] = []
    for i, c, j, score in zip(batch.index.tolist(), conf.tolist(), idx.tolist(), scores):
        row: Prediction = {"path": str(files[i]), "label": classes[j[0]], "confidence": c[0]}
        if top_k > 1:
            row["top"] = [{"label": classes[a], "confidence": b} for a, b in zip(j, c)]
        if min_confidence is not None:
            row["unsure"] = c[0] < min_confidence
        if score is not None:
            row["unknown"], row["unknown_score"] = score > detector["threshold"], score
        rows.append(row)
    return rows


def predict(
    checkpoint: Path | str,
    paths: list[Path | str],
    top_k: int = 1,
    batch_size: int | None = None,
    device: str = "auto",
    events: Events | None = None,
    workers: int | None = None,
    min_confidence: float | None = None,
    tta: str | None = None,
    precision: str = "auto",
    unknown: bool = True,
    runtime: str = "auto",
) -> list[Prediction]:
    """One row per image: label and confidence (and the top k), or the reason it could not be read (a FIFO named
    like an image, only regular files are read; a sub-folder that cannot be read, with its reason).

    Confidences are calibrated (softmax of the logits over the checkpoint's temperature). With
    `min_confidence`, every labeled row says whether it is `unsure` (confidence below it); the label is kept.
    With `unknown` and a checkpoint that has a detector, every labeled row says whether it is `unknown` (an image
    of neither class: its `unknown_score` is past the detector's threshold); the label is kept there too.
    """
    return classify(
        checkpoint, paths, top_k, batch_size, device, events, workers, min_confidence, tta, precision, unknown, runtime
    )["predictions"]


def prediction_columns(rows: list[Prediction]) -> list[tuple[str, Callable[[Prediction], Any]]]:
    """The CSV's columns: path, label, confidence, then `unsure` (with --min-confidence) and the 2nd..kth
    classes (with --top-k), then error; each with how a row fills it."""
    columns: list[tuple[str, Callable[[Prediction], Any]]] = [
        ("path", lambda r: r["path"]),
        ("label", lambda r: r.get("label", "")),
        ("confidence", lambda r: r.get("confidence", "")),
    ]
    if any("unsure" in r for r in rows):
        columns.append(("unsure", lambda r: r.get("unsure", "")))
    if any("unknown" in r for r in rows):
        columns += [
            ("unknown", lambda r: r.get("unknown", "")),
            ("unknown_score", lambda r: r.get("unknown_score", "")),
        ]
    for n in range(1, max((len(r.get("top", ())) for r in rows), default=0)):
        columns += [
            (f"label_{n + 1}", lambda r, n=n: r["top"][n]["label"] if "top" in r else ""),
            (f"confidence_{n + 1}", lambda r, n=n: r["top"][n]["confidence"] if "top" in r else ""),
        ]
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


def _place(row: Prediction) -> tuple[str, ...]:
    """Where --sort-into puts a classified row, below DIR: _unknown/, _unsure/<label>/ or <label>/."""
    if row.get("unknown"):
        return (UNKNOWN,)
    return (UNSURE, row["label"]) if row.get("unsure") else (row["label"],)


def _check_reserved(dest: Path, places: list[tuple[str, ...]]) -> None:
    """DIR/_unsure holds class folders (catdog's unsure images), DIR/_unknown and a class folder hold images: one
    already there that holds the other kind means something else (a class named _unsure, say), and a sort into it
    would mix the two meanings."""
    for name in (UNSURE, UNKNOWN):
        folder = dest / name
        if not folder.is_dir() or not any(p[0] == name for p in places):
            continue
        nested = any(len(p) > 1 for p in places if p[0] == name)
        try:
            with os.scandir(folder) as found:
                clash = any(e.is_dir() != nested for e in found if not ignored(e.name))
        except OSError as exc:
            raise CatdogError(f"--sort-into: cannot read {folder}: {exc.strerror or exc}") from None
        if clash:
            holds, expected = ("images", "a folder per class") if nested else ("folders", "images only")
            raise CatdogError(
                f"--sort-into: {folder} already holds {holds}, so it is not the folder catdog sorts into here "
                f"({expected}), and sorting into it would mix two meanings; sort into another folder"
            )


def sort_into_folders(rows: list[Prediction], dest: Path | str) -> int:
    """Copy each classified image into dest/<label>/ (row["copied_to"]); the originals are only read. Rows
    marked unknown (of neither class) go to dest/_unknown/, rows marked unsure (predict's min_confidence) to
    dest/_unsure/<label>/ instead, for a person to look at.

    Labels come from the checkpoint, which may not be ours: one that is not a plain folder name is refused, and so
    is a dest/_unsure or dest/_unknown that already means something else (`_check_reserved`).
    """
    dest = Path(dest)
    labels = {r["label"] for r in rows if "label" in r}
    for label in labels:
        if label in ("", ".", "..") or Path(label).name != label or "\\" in label:
            raise CatdogError(f"class name {label!r} is not a safe folder name; refusing to sort into {dest}")
    if UNSURE in labels and any(r.get("unsure") for r in rows):
        raise CatdogError(f"a class is named {UNSURE}, the folder unsure images go to; sort without --min-confidence")
    if UNKNOWN in labels and any(r.get("unknown") for r in rows):
        raise CatdogError(f"a class is named {UNKNOWN}, the folder unknown images go to; sort with --no-unknown")
    check_folder_target(dest, "--sort-into")
    _check_reserved(dest, [_place(r) for r in rows if "label" in r])
    for row in rows:
        if "label" not in row:
            continue
        folder = dest.joinpath(*_place(row))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            row["copied_to"] = str(copy_new(Path(row["path"]), folder))
        except OSError as exc:
            raise CatdogError(f"could not copy {row['path']} into {folder}: {exc.strerror or exc}") from None
    return sum("copied_to" in r for r in rows)
