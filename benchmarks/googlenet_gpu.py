"""Issue 28's GPU follow-ups in one process per variant: (b) why googlenet's compare cells sit at chance, (a) what
cuDNN autotuning costs a backbone's first cell. Prints one JSON line per variant.

python benchmarks/googlenet_gpu.py DATA VARIANT [--epochs 5] [--image-size 224] [--batch-size 128]
VARIANT: init_true (torchvision's truncated-normal init, what catdog built), init_false (PyTorch's default init),
         benchmark_on / benchmark_off (resnet34 finetune + discriminative, cudnn.benchmark as named)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time

import torch

from catdog_cli.core.config import CompareConfig, TrainConfig
from catdog_cli.core.events import Events
from catdog_cli.models import backbones
from catdog_cli.training import compare as compare_mod
from catdog_cli.training import setup


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("variant")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    backbone, strategies = "googlenet", ["finetune", "discriminative"]
    if args.variant.startswith("init_"):
        init = args.variant.startswith("init_true")
        tv = backbones.TORCHVISION["googlenet"]
        kwargs = dict(tv.build_kwargs) | {"init_weights": init}
        backbones.TORCHVISION["googlenet"] = dataclasses.replace(tv, build_kwargs=tuple(kwargs.items()))
    else:
        backbone = "resnet34"
        if args.variant == "benchmark_off":
            real = setup.start_run

            def start_run(*a, **k):
                run = real(*a, **k)
                torch.backends.cudnn.benchmark = False
                return run

            compare_mod.start_run = start_run
    train = TrainConfig(
        args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        weights="none",
        device=args.device,
        workers=8,
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = compare_mod.compare(
            CompareConfig(train, backbones=[backbone], strategies=strategies), out + "/cmp", Events()
        )
    cells = [
        {
            "strategy": r["strategy"],
            "status": r["status"],
            "error": r["error"],
            "best_val_acc": r["best_val_acc"],
            "train_seconds": r["train_seconds"],
            "val_acc": [round(h["val_acc"], 4) for h in r["history"]],
            "train_acc": [round(h["train_acc"], 4) for h in r["history"]],
        }
        for r in result["rows"]
    ]
    print(
        json.dumps(
            {
                "variant": args.variant,
                "backbone": backbone,
                "wall_s": round(time.perf_counter() - start, 2),
                "cells": cells,
                "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
