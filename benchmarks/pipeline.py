"""Throughput, the PyTorch tutorial's way vs catdog's, in one process, on one device: training images per
second, and predict's images per second.

    python benchmarks/pipeline.py --data path/to/hymenoptera_data --backbone resnet34 --batch-size 32

tutorial: ImageFolder + PIL RandomResizedCrop/flip/ToTensor/Normalize in DataLoader workers, fp32, SGD.
catdog:   the engine as `catdog train` runs it: decoded once, resident on the device, augmented there,
          bf16 autocast and channels_last on CUDA and on CPUs with native bf16 (`--precision`). Decoding is
          reported separately (paid once per process).
Both train the same backbone from random init; img/s counts training images per second over timed epochs
after one warm-up epoch.
predict:  a plain loop (DataLoader workers running the tutorial's eval transforms, the fp32 model as saved)
          vs `catdog predict`'s path (`inference.classify`: decode in threads overlapping compute, the
          precision above), the same checkpoint, files and batch size; timed passes alternate.
--baseline-precision fp32: catdog's training and predict again at that precision, in the same run, so that
          bf16's gain is measured side by side too (`catdog_baseline`, `predict.baseline`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from catdog_cli.core.config import TrainConfig
from catdog_cli.core.defaults import PRECISIONS
from catdog_cli.core.events import Events
from catdog_cli.core.paths import resolve_data
from catdog_cli.data.dataset import load_dataset
from catdog_cli.data.decode import default_workers
from catdog_cli.data.folders import walk_images
from catdog_cli.data.presets import IMAGENET_MEAN, IMAGENET_STD
from catdog_cli.data.sources import DecodeCache
from catdog_cli.inference.predict import classify
from catdog_cli.models import checkpoints
from catdog_cli.models.backbones import build_model, preset_for
from catdog_cli.runtime.device import resolve_device
from catdog_cli.runtime.signals import StopRequest
from catdog_cli.training.loop import train_one_epoch
from catdog_cli.training.setup import start_run


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def tutorial_transforms(image_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> transforms.Compose:
    """The tutorial's train transforms, run per image in PIL by the DataLoader workers."""
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(list(mean), list(std)),
        ]
    )


def tutorial_eval_transforms(resize: int, image_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> transforms.Compose:
    """The tutorial's val transforms: Resize (short side) + CenterCrop."""
    return transforms.Compose(
        [
            transforms.Resize(resize),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(list(mean), list(std)),
        ]
    )


def tutorial_loader(
    folder, transform: transforms.Compose, batch_size: int, workers: int, device: torch.device, shuffle: bool = True
) -> DataLoader:
    """ImageFolder + DataLoader, the images decoded again every epoch."""
    return DataLoader(
        datasets.ImageFolder(str(folder), transform),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
    )


def tutorial_train_epoch(
    model: torch.nn.Module, loader: DataLoader, opt: torch.optim.Optimizer, device: torch.device, scheduler=None
) -> int:
    """One epoch of the tutorial's step (fp32, no host sync); returns the number of images seen."""
    model.train()
    seen = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        seen += len(y)
    return seen


def tutorial_evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Val accuracy, fp32."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            correct += (model(x).argmax(1) == y).sum()
            seen += len(y)
    return correct.item() / max(1, seen)


def tutorial_img_per_s(
    data: str, backbone: str, batch_size: int, workers: int, image_size: int, device: torch.device, epochs: int
) -> float:
    loader = tutorial_loader(resolve_data(data) / "train", tutorial_transforms(image_size), batch_size, workers, device)
    model = build_model(backbone, len(loader.dataset.classes), "none", device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    seen, start = 0, 0.0
    for epoch in range(epochs + 1):
        if epoch == 1:
            sync(device)
            start, seen = time.perf_counter(), 0
        seen += tutorial_train_epoch(model, loader, opt, device)
    sync(device)
    return seen / (time.perf_counter() - start)


def catdog_img_per_s(
    data: str,
    backbone: str,
    strategy: str,
    batch_size: int,
    image_size: int,
    device: torch.device,
    epochs: int,
    cache: DecodeCache,
    precision: str = "auto",
    **options: Any,
) -> tuple[float, float, str]:
    """Training img/s of the engine, its decode + setup seconds, and the precision it chose; `options` are
    further TrainConfig fields (workers, cache_gib)."""
    config = TrainConfig(
        data,
        backbone=backbone,
        strategy=strategy,
        epochs=epochs + 1,
        batch_size=batch_size,
        image_size=image_size,
        weights="none",
        device=str(device),
        precision=precision,
        **options,
    )
    start = time.perf_counter()
    run = start_run(config, load_dataset(data, seed=config.seed), Events(), cache)
    setup = time.perf_counter() - start
    generator = torch.Generator(device=device).manual_seed(0)
    seen, start = 0, 0.0
    for epoch in range(epochs + 1):
        if epoch == 1:
            sync(device)
            start, seen = time.perf_counter(), 0
        seen += train_one_epoch(run, Events(), StopRequest(), generator)["images"]
        run.state.epoch += 1
    sync(device)
    return seen / (time.perf_counter() - start), setup, run.precision.name


# --- predict: a plain DataLoader loop vs `catdog predict`'s path --------------------------------------------


class ImageFiles(torch.utils.data.Dataset):
    """Unlabeled image files through the tutorial's eval transforms, as a plain predict script reads them."""

    def __init__(self, files: list[Path], transform: transforms.Compose):
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as im:
            return self.transform(im.convert("RGB"))


def save_untrained(backbone: str, classes: int, image_size: int, path: Path) -> Path:
    """A checkpoint of a random-init model: predict's speed does not depend on what the weights learned."""
    preset = preset_for(backbone, image_size)
    model = build_model(backbone, classes, "none", "cpu", seed=0)
    checkpoints.save(
        path,
        model,
        {
            "backbone": backbone,
            "classes": [f"class{i}" for i in range(classes)],
            **preset.checkpoint_fields(),
            "config": {},
        },
    )
    return path


def plain_predict_pass(
    checkpoint: Path, files: list[Path], batch_size: int, workers: int, device: torch.device
) -> float:
    """img/s of the plain loop: DataLoader workers decoding with PIL + torchvision transforms, the fp32 model
    as saved (no autocast, no channels_last), softmax and top-1 per batch."""
    ckpt = checkpoints.load(checkpoint)
    model = checkpoints.restore_model(ckpt, device)
    transform = tutorial_eval_transforms(ckpt["resize"], ckpt["image_size"], ckpt["mean"], ckpt["std"])
    rows = []
    sync(device)
    start = time.perf_counter()
    loader = DataLoader(
        ImageFiles(files, transform), batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda"
    )
    with torch.no_grad():
        for x in loader:
            conf, idx = model(x.to(device)).softmax(1).max(1)
            rows += zip(idx.tolist(), conf.tolist())
    return len(rows) / (time.perf_counter() - start)


def predict_img_per_s(
    checkpoint: Path,
    folder: Path,
    batch_size: int,
    workers: int,
    device: torch.device,
    passes: int,
    precision: str,
    baseline: str | None = None,
) -> dict[str, Any]:
    """Both ways over the same files, alternating, after one untimed pass each (page cache, kernels); with
    `baseline`, catdog's path at that precision too, in the same alternation."""
    files = walk_images(folder)[0]
    plain, catdog, other = [], [], []
    for i in range(passes + 1):
        p = plain_predict_pass(checkpoint, files, batch_size, workers, device)
        result = classify(
            checkpoint, files, batch_size=batch_size, device=str(device), workers=workers, precision=precision
        )
        if baseline:
            base = classify(
                checkpoint, files, batch_size=batch_size, device=str(device), workers=workers, precision=baseline
            )
        if i:
            plain.append(p)
            catdog.append(result["images_per_sec"])
            if baseline:
                other.append(base["images_per_sec"])
    found = {
        "images": len(files),
        "folder": str(folder),
        "batch_size": batch_size,
        "workers": workers,
        "passes": passes,
        "plain_dataloader_img_per_s": [round(x, 1) for x in plain],
        "catdog_img_per_s": [round(x, 1) for x in catdog],
        "catdog_precision": result["precision"],
        "speedup": round(statistics.mean(catdog) / statistics.mean(plain), 2),
    }
    if baseline:
        found["baseline"] = {
            "precision": base["precision"],
            "catdog_img_per_s": [round(x, 1) for x in other],
            "speedup": round(statistics.mean(other) / statistics.mean(plain), 2),
            "precision_speedup": round(statistics.mean(catdog) / statistics.mean(other), 2),
        }
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--backbone", default="resnet34")
    parser.add_argument("--batch-size", type=int, default=32, help="tutorial pipeline batch size")
    parser.add_argument("--catdog-batch-size", type=int, default=None, help="default: --batch-size")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, default_workers()),
        help="DataLoader workers of the tutorial and the plain predict loop; catdog's decode threads",
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="catdog's (the tutorial: fp32)")
    parser.add_argument(
        "--baseline-precision",
        default=None,
        choices=PRECISIONS,
        help="catdog again at this precision, side by side (e.g. fp32 against auto's bf16)",
    )
    parser.add_argument(
        "--predict",
        type=Path,
        default=None,
        help="folder of images for the predict comparison (default: DATA/val); 'none' skips it",
    )
    parser.add_argument("--predict-passes", type=int, default=2, help="timed passes each way (after one warm-up)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    cache = DecodeCache()
    catdog_bs = args.catdog_batch_size or args.batch_size
    result: dict[str, Any] = {
        "device": device_name(device),
        "cores": default_workers(),
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": {"torch": torch.__version__},
        "backbone": args.backbone,
        "image_size": args.image_size,
    }
    tutorial = tutorial_img_per_s(
        args.data, args.backbone, args.batch_size, args.workers, args.image_size, device, args.epochs
    )
    finetune, decode_s, precision = catdog_img_per_s(
        args.data, args.backbone, "finetune", catdog_bs, args.image_size, device, args.epochs, cache, args.precision
    )
    freeze, _, _ = catdog_img_per_s(
        args.data, args.backbone, "freeze", catdog_bs, args.image_size, device, args.epochs, cache, args.precision
    )
    result |= {
        "tutorial": {
            "batch_size": args.batch_size,
            "workers": args.workers,
            "precision": "fp32",
            "img_per_s": round(tutorial, 1),
        },
        "catdog": {
            "batch_size": catdog_bs,
            "precision": precision,
            "finetune_img_per_s": round(finetune, 1),
            "freeze_img_per_s": round(freeze, 1),
            "decode_and_setup_s": round(decode_s, 2),
        },
        "speedup_finetune": round(finetune / tutorial, 2),
        "freeze_over_finetune": round(freeze / finetune, 2),
    }
    if args.baseline_precision:
        base = {
            strategy: catdog_img_per_s(
                args.data,
                args.backbone,
                strategy,
                catdog_bs,
                args.image_size,
                device,
                args.epochs,
                cache,
                args.baseline_precision,
            )
            for strategy in ("finetune", "freeze")
        }
        result["catdog_baseline"] = {
            "precision": base["finetune"][2],
            "finetune_img_per_s": round(base["finetune"][0], 1),
            "freeze_img_per_s": round(base["freeze"][0], 1),
            "speedup_finetune": round(base["finetune"][0] / tutorial, 2),
            "precision_speedup_finetune": round(finetune / base["finetune"][0], 2),
            "precision_speedup_freeze": round(freeze / base["freeze"][0], 2),
        }
    if str(args.predict) != "none":
        folder = args.predict or resolve_data(args.data) / "val"
        with tempfile.TemporaryDirectory(prefix="catdog-bench-") as tmp:
            checkpoint = save_untrained(args.backbone, 2, args.image_size, Path(tmp) / "model.pt")
            result["predict"] = predict_img_per_s(
                checkpoint,
                folder,
                args.batch_size,
                args.workers,
                device,
                args.predict_passes,
                args.precision,
                args.baseline_precision,
            )
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
