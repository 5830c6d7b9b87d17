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

from catdog_cli.backbones import build_model
from catdog_cli.data import default_workers, resolve_data
from catdog_cli.engine import Events, StopRequest, TrainConfig, resolve_device, start_run, train_epoch
from catdog_cli.pipeline import DecodeCache


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tutorial_img_per_s(data: str, backbone: str, batch_size: int, workers: int, image_size: int,
                       device: torch.device, epochs: int) -> float:
    tf = transforms.Compose([
        transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    train = datasets.ImageFolder(str(resolve_data(data) / "train"), tf)
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, pin_memory=device.type == "cuda")
    model = build_model(backbone, len(train.classes), "none", device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    seen, start = 0, 0.0
    for epoch in range(epochs + 1):
        if epoch == 1:
            sync(device)
            start, seen = time.perf_counter(), 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(y)
    sync(device)
    return seen / (time.perf_counter() - start)


def catdog_img_per_s(data: str, backbone: str, strategy: str, batch_size: int, image_size: int,
                     device: torch.device, epochs: int, cache: DecodeCache) -> tuple[float, float]:
    config = TrainConfig(data, backbone, strategy, epochs + 1, batch_size, image_size=image_size, weights="none",
                         device=str(device))
    start = time.perf_counter()
    run = start_run(config, Events(), cache)
    setup = time.perf_counter() - start
    generator = torch.Generator(device=device).manual_seed(0)
    seen, start = 0, 0.0
    for epoch in range(epochs + 1):
        if epoch == 1:
            sync(device)
            start, seen = time.perf_counter(), 0
        seen += train_epoch(run, Events(), StopRequest(), generator)["images"]
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
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
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
