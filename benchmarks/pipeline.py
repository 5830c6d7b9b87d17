"""Training throughput: the PyTorch tutorial's input pipeline vs catdog's, in one process, on one device.

    python benchmarks/pipeline.py --data path/to/hymenoptera_data --backbone resnet34 --batch-size 32

tutorial: ImageFolder + PIL RandomResizedCrop/flip/ToTensor/Normalize in DataLoader workers, fp32, SGD.
catdog:   the engine as `catdog train` runs it: decoded once, resident on the device, augmented there,
          bf16 autocast and channels_last on CUDA. Decoding is reported separately (paid once per process).
Both train the same backbone from random init; img/s counts training images per second over timed epochs
after one warm-up epoch.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from catdog_cli.backbones import IMAGENET_MEAN, IMAGENET_STD, build_model
from catdog_cli.data import default_workers, resolve_data
from catdog_cli.engine import Events, TrainConfig, start_run, train_one_epoch
from catdog_cli.pipeline import DecodeCache
from catdog_cli.runtime import StopRequest, resolve_device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def tutorial_transforms(image_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> transforms.Compose:
    """The tutorial's train transforms, run per image in PIL by the DataLoader workers."""
    return transforms.Compose([
        transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(list(mean), list(std)),
    ])


def tutorial_eval_transforms(resize: int, image_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> transforms.Compose:
    """The tutorial's val transforms: Resize (short side) + CenterCrop."""
    return transforms.Compose([
        transforms.Resize(resize), transforms.CenterCrop(image_size), transforms.ToTensor(),
        transforms.Normalize(list(mean), list(std)),
    ])


def tutorial_loader(folder, transform: transforms.Compose, batch_size: int, workers: int, device: torch.device,
                    shuffle: bool = True) -> DataLoader:
    """ImageFolder + DataLoader, the images decoded again every epoch."""
    return DataLoader(datasets.ImageFolder(str(folder), transform), batch_size=batch_size, shuffle=shuffle,
                      num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda")


def tutorial_train_epoch(model: torch.nn.Module, loader: DataLoader, opt: torch.optim.Optimizer,
                         device: torch.device, scheduler=None) -> int:
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


def tutorial_img_per_s(data: str, backbone: str, batch_size: int, workers: int, image_size: int,
                       device: torch.device, epochs: int) -> float:
    loader = tutorial_loader(resolve_data(data) / "train", tutorial_transforms(image_size), batch_size, workers,
                             device)
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


def catdog_img_per_s(data: str, backbone: str, strategy: str, batch_size: int, image_size: int,
                     device: torch.device, epochs: int, cache: DecodeCache) -> tuple[float, float]:
    config = TrainConfig(data, backbone=backbone, strategy=strategy, epochs=epochs + 1, batch_size=batch_size,
                         image_size=image_size, weights="none", device=str(device))
    start = time.perf_counter()
    run = start_run(config, Events(), cache)
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
    return seen / (time.perf_counter() - start), setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--backbone", default="resnet34")
    parser.add_argument("--batch-size", type=int, default=32, help="tutorial pipeline batch size")
    parser.add_argument("--catdog-batch-size", type=int, default=None, help="default: --batch-size")
    parser.add_argument("--workers", type=int, default=min(8, default_workers()))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    name = device_name(device)
    cache = DecodeCache()
    catdog_bs = args.catdog_batch_size or args.batch_size
    tutorial = tutorial_img_per_s(args.data, args.backbone, args.batch_size, args.workers, args.image_size,
                                  device, args.epochs)
    finetune, decode_s = catdog_img_per_s(args.data, args.backbone, "finetune", catdog_bs, args.image_size,
                                          device, args.epochs, cache)
    freeze, _ = catdog_img_per_s(args.data, args.backbone, "freeze", catdog_bs, args.image_size, device,
                                 args.epochs, cache)
    result = {
        "device": name, "date": time.strftime("%Y-%m-%d"), "backbone": args.backbone, "image_size": args.image_size,
        "tutorial": {"batch_size": args.batch_size, "workers": args.workers, "img_per_s": round(tutorial, 1)},
        "catdog": {"batch_size": catdog_bs, "finetune_img_per_s": round(finetune, 1),
                   "freeze_img_per_s": round(freeze, 1), "decode_and_setup_s": round(decode_s, 2)},
        "speedup_finetune": round(finetune / tutorial, 2), "freeze_over_finetune": round(freeze / finetune, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
