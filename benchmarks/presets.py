"""What a compare grid of each backbone preset costs: per-backbone training and eval speed, and the grid's
estimated time (the figure `catdog compare --help` quotes).

For every backbone of the presets it times, on one device, the steps a compare cell runs: a finetune step
(forward, backward, AdamW), a freeze step (the backbone without autograd, the head trained) and an eval
forward, at the given image size, from random init (speed does not depend on the weights), after warm-up.
It counts each backbone's forward FLOPs once (torch.utils.flop_counter). The grid estimate for a dataset of
TRAIN and VAL images is, per cell, epochs x (TRAIN / train speed + VAL / eval speed), with finetune's speed for
finetune and discriminative (the same work) and freeze's for freeze; decoding and model building (seconds
per grid) are left out. Prints one JSON document.

    python benchmarks/presets.py --device cpu                     # the CPU figures in benchmarks/README.md
    python benchmarks/presets.py --device cuda --batch-size 64    # the same on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from catdog_cli.core.defaults import BACKBONE_PRESETS
from catdog_cli.models.backbones import build_model
from catdog_cli.models.strategies import param_groups
from catdog_cli.runtime.device import Precision


def timed(step, steps: int, device: torch.device) -> float:
    """Seconds per call of step(): the fastest of `steps` calls after one warm-up call. The minimum, because on
    a shared machine other work only ever adds time."""
    step()
    best = float("inf")
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def measure(backbone: str, strategy: str, batch: int, size: int, steps: int, device: torch.device) -> float:
    """Training images per second of one strategy."""
    model = build_model(backbone, 2, "none", device, seed=0)
    optimizer = torch.optim.AdamW(param_groups(strategy, model))
    precision = Precision(device)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 2, (batch,), device=device)
    model.train()

    def step() -> None:
        with precision.autocast():
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return batch / timed(step, steps, device)


def measure_eval(backbone: str, batch: int, size: int, steps: int, device: torch.device) -> tuple[float, int]:
    """Eval images per second, and the forward FLOPs of one image."""
    model = build_model(backbone, 2, "none", device, seed=0).eval()
    precision = Precision(device)
    x = torch.randn(batch, 3, size, size, device=device)

    def step() -> None:
        with torch.inference_mode(), precision.autocast():
            model(x)

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x[:1])
    return batch / timed(step, steps, device), counter.get_total_flops()


def grid_seconds(speeds: dict[str, dict[str, float]], backbones: list[str], train: int, val: int, epochs: int) -> float:
    total = 0.0
    for b in backbones:
        s = speeds[b]
        for strategy in ("finetune", "freeze", "discriminative"):
            per_image = s["freeze_img_s"] if strategy == "freeze" else s["finetune_img_s"]
            total += epochs * (train / per_image + val / s["eval_img_s"])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(BACKBONE_PRESETS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step (fastest kept)")
    parser.add_argument("--train", type=int, default=244, help="training images (hymenoptera: 244)")
    parser.add_argument("--val", type=int, default=153, help="val images (hymenoptera: 153)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per cell (compare's default: 3)")
    args = parser.parse_args()
    device = torch.device(args.device)
    presets = {name: list(BACKBONE_PRESETS[name]) for name in args.presets.split(",")}
    speeds: dict[str, dict[str, float]] = {}
    for backbone in dict.fromkeys(b for names in presets.values() for b in names):
        eval_speed, flops = measure_eval(backbone, args.batch_size, args.image_size, args.steps, device)
        speeds[backbone] = {
            "gflops_per_image": flops / 1e9,
            "finetune_img_s": measure(backbone, "finetune", args.batch_size, args.image_size, args.steps, device),
            "freeze_img_s": measure(backbone, "freeze", args.batch_size, args.image_size, args.steps, device),
            "eval_img_s": eval_speed,
        }
        print(json.dumps({backbone: speeds[backbone]}), flush=True)
    grids = {
        name: {
            "cells": 3 * len(names),
            "estimated_minutes": grid_seconds(speeds, names, args.train, args.val, args.epochs) / 60,
        }
        for name, names in presets.items()
    }
    print(
        json.dumps(
            {
                "device": str(device),
                "cpu": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "args": vars(args),
                "backbones": speeds,
                "grids": grids,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
