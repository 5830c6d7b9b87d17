"""`--log tensorboard`: event files in the run folder, OUT/tensorboard/ (`tensorboard --logdir runs` shows all).

train: the epoch scalars (loss/, accuracy/, lr, images_per_sec), then the confusion matrix and the top losses
as images and the run's summary as text. compare: one log folder per cell (OUT/tensorboard/<cell>/) with its
scalars and its row in the hparams view (backbone, strategy and the recipe against its accuracies). lr-find:
each strategy's loss and lr by step. torch's SummaryWriter (it needs the tensorboard package) is imported here
only, when asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from catdog_cli.core.records import CompareRow, EpochRecord, RunSummary
from catdog_cli.tracking.base import row_metrics

FOLDER = "tensorboard"
THUMB = 96  # the side of a top-loss image, in pixels
# EpochRecord key -> scalar tag: train and val side by side in one chart each
SCALARS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "ema_val_loss": "loss/val_ema",
    "train_acc": "accuracy/train",
    "val_acc": "accuracy/val",
    "ema_val_acc": "accuracy/val_ema",
    "lr": "lr",
    "images_per_sec": "images_per_sec",
}


def cell_folder(backbone: str, strategy: str) -> str:
    return f"{backbone.replace(':', '_')}-{strategy}"


def confusion_image(confusion: list[list[int]], classes: list[str], cell: int = 48) -> np.ndarray:
    """The confusion matrix as a picture (rows: true class, columns: predicted), darker where more images."""
    n = len(classes)
    label = max(60, 7 * max(len(c) for c in classes))
    image = Image.new("RGB", (label + n * cell, label + n * cell), "white")
    draw = ImageDraw.Draw(image)
    top = max((max(row) for row in confusion), default=0) or 1
    for i, row in enumerate(confusion):
        draw.text((4, label + i * cell + cell // 2 - 5), classes[i][:20], fill="black")
        draw.text((label + i * cell + 4, label - 14), classes[i][:6], fill="black")
        for j, count in enumerate(row):
            shade = int(255 - 200 * count / top)
            box = (label + j * cell, label + i * cell, label + (j + 1) * cell - 1, label + (i + 1) * cell - 1)
            draw.rectangle(box, fill=(shade, shade, 255), outline="grey")
            draw.text((box[0] + 6, box[1] + cell // 2 - 5), str(count), fill="black" if shade > 128 else "white")
    return np.asarray(image)


def top_losses_image(top: list[dict[str, Any]]) -> np.ndarray | None:
    """The worst-predicted val images side by side, each captioned true -> predicted; None if none can be read."""
    tiles = []
    for item in top:
        try:
            with Image.open(item["path"]) as im:
                tile = ImageOps.fit(im.convert("RGB"), (THUMB, THUMB))
        except OSError:  # moved or deleted since: left out
            continue
        captioned = Image.new("RGB", (THUMB, THUMB + 14), "white")
        captioned.paste(tile, (0, 14))
        ImageDraw.Draw(captioned).text((2, 1), f"{item['true']}>{item['pred']}"[:16], fill="black")
        tiles.append(captioned)
    if not tiles:
        return None
    strip = Image.new("RGB", (len(tiles) * (THUMB + 4), THUMB + 14), "white")
    for k, tile in enumerate(tiles):
        strip.paste(tile, (k * (THUMB + 4), 0))
    return np.asarray(strip)


def hparams(summary: RunSummary) -> dict[str, Any]:
    """A compare cell's settings for the hparams view (its values must be numbers, text or booleans)."""
    found = {
        "backbone": summary["backbones"][0],
        "strategy": summary["strategies"][0],
        "lr": summary["lr"],
        "epochs": summary["epochs"],
        "batch_size": summary["batch_size"],
        "image_size": summary["image_size"],
        "recipe": " ".join(summary["recipe"]) or "defaults",
    }
    return {k: v for k, v in found.items() if v is not None}


class TensorboardTracker:
    name = "tensorboard"

    def __init__(self) -> None:
        self.root: Path | None = None
        self.command = ""
        self.writer: Any = None
        self.cell_params: dict[str, Any] = {}

    def _writer(self, folder: Path) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        if self.writer is not None:
            self.writer.close()
        self.writer = SummaryWriter(str(folder))
        return self.writer

    def begin(self, command: str, summary: RunSummary, out: Path | None, saved: dict[str, Any]) -> dict[str, Any]:
        self.command = command
        self.root = out / FOLDER if out is not None else None
        if command == "train" and self.root is not None:
            lines = [f"{k}: {summary[k]}" for k in ("data", "backbones", "strategies", "epochs", "device")]  # type: ignore[literal-required]
            self._writer(self.root).add_text("summary", "  \n".join(lines))
        return {}

    def epoch(self, record: EpochRecord) -> None:
        if self.writer is None:
            return
        for key, tag in SCALARS.items():
            if key in record:
                self.writer.add_scalar(tag, record[key], record["epoch"])  # type: ignore[literal-required]
        self.writer.flush()  # live curves: TensorBoard reads the file while the run goes on

    def cell(self, summary: RunSummary) -> dict[str, Any]:
        if self.root is not None:
            self._writer(self.root / cell_folder(summary["backbones"][0], summary["strategies"][0]))
            self.cell_params = hparams(summary)
        return {}

    def cell_done(self, row: CompareRow) -> None:
        cell = (self.cell_params.get("backbone"), self.cell_params.get("strategy"))
        if self.writer is not None and cell == (row["backbone"], row["strategy"]):
            metrics = {f"hparam/{k}": v for k, v in row_metrics(row).items()}
            self.writer.add_hparams(self.cell_params, metrics, run_name=".")
            self.writer.close()
            self.writer = None

    def end(self, result: dict[str, Any]) -> None:
        root = Path(result["out"]) / FOLDER
        if self.command == "compare":
            self._compare_end(result, root)
        elif self.command == "lr-find":
            self._lr_find_end(result, root)
        elif self.writer is not None:
            self._train_end(result)
        self.close()

    def fail(self) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _train_end(self, result: dict[str, Any]) -> None:
        if "evaluation" in result:
            picture = confusion_image(result["evaluation"]["confusion"], result["classes"])
            self.writer.add_image("confusion_matrix/val", picture, dataformats="HWC")
        strip = top_losses_image(result.get("top_losses", []))
        if strip is not None:
            self.writer.add_image("top_losses/val", strip, dataformats="HWC")
        best = result.get("best_val_acc")
        self.writer.add_text(
            "ended", f"{result.get('ended', '')}; best val accuracy {best} (epoch {result['best_epoch']})"
        )

    def _compare_end(self, result: dict[str, Any], root: Path) -> None:
        """Cells read back from an earlier grid (not trained now, nothing logged yet) get their folder here."""
        for row in result["rows"]:
            folder = root / cell_folder(row["backbone"], row["strategy"])
            if folder.exists() or row["status"] != "ok":
                continue
            writer = self._writer(folder)
            for record in row["history"]:
                self.epoch(record)
            metrics = {f"hparam/{k}": v for k, v in row_metrics(row).items()}
            writer.add_hparams({"backbone": row["backbone"], "strategy": row["strategy"]}, metrics, run_name=".")

    def _lr_find_end(self, result: dict[str, Any], root: Path) -> None:
        writer = self._writer(root)
        for curve in result["curves"]:
            for step, (lr, loss) in enumerate(zip(curve["lrs"], curve["losses"])):
                writer.add_scalar(f"lr_find/{curve['strategy']}/loss", loss, step)
                writer.add_scalar(f"lr_find/{curve['strategy']}/lr", lr, step)


def make(uri: str | None, log_model: bool) -> TensorboardTracker:
    return TensorboardTracker()
