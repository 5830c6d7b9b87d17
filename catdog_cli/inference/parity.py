"""Export's proof: the exported file (onnxruntime for ONNX, torch.jit for TorchScript), fed crops made from the
original files by the documented steps (contract.py), and catdog's own predict run on the same real images, on the
CPU in fp32, must agree within `TOLERANCE` on every probability and on every label.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from catdog_cli.core.events import Events
from catdog_cli.core.records import Parity
from catdog_cli.data.dataset import Dataset, Split, load_dataset
from catdog_cli.data.decode import ImageBatch, ImageError, ImageSpec
from catdog_cli.data.folders import collect_images
from catdog_cli.errors import CatdogError
from catdog_cli.inference.contract import contract_crop
from catdog_cli.inference.runtimes import LOGITS, SCORE, ExportedRunner, OnnxRunner, TorchRunner, TorchScriptRunner
from catdog_cli.inference.trained import TrainedModel

TOLERANCE = 1e-4  # largest |probability difference| allowed between the file and catdog (fp32 on the CPU)


PARITY_IMAGES = 32  # real images the parity check runs on


RUNNERS: dict[str, type[OnnxRunner] | type[TorchScriptRunner]] = {"onnx": OnnxRunner, "torchscript": TorchScriptRunner}


def probabilities(runner: ExportedRunner, images: torch.Tensor) -> torch.Tensor:
    """What an exported file answers for uint8 (N, C, C, 3) crops: calibrated class probabilities."""
    return runner.run(images)[runner.output]


def spread(paths: list[Path], k: int) -> list[Path]:
    """k paths spread evenly over the list (a folder's files come class by class: every class gets its share)."""
    if len(paths) <= k:
        return paths
    return [paths[i * len(paths) // k] for i in range(k)]


def parity_images(trained: TrainedModel, folder: Path | str | None, k: int = PARITY_IMAGES) -> tuple[list[Path], str]:
    """Up to k real images to prove parity on: the given folder's, else the model's own val split."""
    if folder is not None:
        return spread(collect_images([folder]), k), str(folder)
    dataset = own_dataset(trained, "to prove parity on: pass --parity-images DIR")
    split = "val" if "val" in dataset.splits else "all"
    return spread(dataset.split(split).paths, k), f"the {split} split of {dataset.root}"


def own_dataset(trained: TrainedModel, missing: str) -> Dataset:
    """The data the model was trained on, with its run's own split where it recorded one (its val images are real
    val images); `missing` ends the refusal when that data is not there."""
    ckpt = trained.checkpoint
    data = Path(ckpt.get("data", ""))
    if not ckpt.get("data") or not data.is_dir():
        raise CatdogError(
            f"the data the model was trained on ({ckpt.get('data') or 'not recorded'}) is not there {missing}"
        )
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    recorded = ckpt.get("split")  # the run's own split where it recorded one: its val images are real val images
    return load_dataset(
        data,
        config.get("val_split", 0.2),
        config.get("seed", 0),
        classes=trained.classes,
        recorded=recorded if isinstance(recorded, dict) else None,
    )


def check_parity(
    fmt: str,
    path: Path,
    trained: TrainedModel,
    checkpoint: Path,
    images: list[Path],
    source: str,
    events: Events,
    tolerance: float = TOLERANCE,
    batch_size: int = 8,
) -> Parity:
    """The file and catdog's PyTorch runner (what predict computes at fp32 on the CPU) on the same images: the
    largest probability difference, label agreement, and with a detector the largest difference of the unknown score
    (relative to the score, at least 1).

    The file gets crops made from the original files by the documented steps (`contract_crop`), not by catdog's own
    decoder; the runner gets catdog's eval decode of the same files. Batches of `batch_size` and a smaller last one
    (so a dynamic batch size is exercised too); unreadable images are left out.
    """
    spec: ImageSpec = trained.preset.eval_spec()
    split = Split(images, [0] * len(images))
    crops, readable = [], []
    for i in range(len(split)):
        with contextlib.suppress(ImageError):
            crops.append(spec.decode(split, i).image)
            readable.append(Path(images[i]))
    if not crops:
        raise CatdogError(f"no readable images in {source} to prove parity on")
    preset = trained.preset
    try:
        contract = [contract_crop(path, preset.resize, preset.image_size) for path in readable]
    except (OSError, ValueError, SyntaxError) as exc:  # catdog read it a moment ago
        raise CatdogError(f"an image changed while checking parity: {exc}") from None
    reference, runner = TorchRunner(checkpoint, "cpu", "fp32", model=trained), RUNNERS[fmt](path)
    events.task(f"parity ({fmt} vs catdog predict)", len(crops))
    expected, parts, want, scores = [], [], [], []
    for start in range(0, len(crops), batch_size):
        batch = torch.stack(crops[start : start + batch_size])
        unlabeled = ImageBatch(batch, torch.zeros(len(batch), dtype=torch.int64), torch.arange(len(batch)))
        ours = reference.outputs(unlabeled)
        expected.append((ours[LOGITS] / reference.temperature).softmax(1).double())
        found = runner.run(torch.stack(contract[start : start + batch_size]).contiguous())
        parts.append(found[runner.output].double())
        if SCORE in ours:
            if SCORE not in found:
                raise CatdogError("the exported model has no unknown score, yet the checkpoint has a detector")
            want.append(ours[SCORE].double())
            scores.append(found[SCORE].double())
        events.advance(len(batch))
    expected, got = torch.cat(expected), torch.cat(parts)
    diff = (got - expected).abs().max().item()
    agreement = (got.argmax(1) == expected.argmax(1)).double().mean().item()
    parity: Parity = {
        "images": len(crops),
        "source": source,
        "max_abs_diff": diff,
        "label_agreement": agreement,
        "tolerance": tolerance,
        "passed": diff <= tolerance and agreement == 1.0,
    }
    if want:
        wanted, score = torch.cat(want), torch.cat(scores)
        parity["unknown_score_diff"] = ((score - wanted).abs() / wanted.abs().clamp(min=1)).max().item()
        parity["passed"] = parity["passed"] and parity["unknown_score_diff"] <= tolerance
    return parity
