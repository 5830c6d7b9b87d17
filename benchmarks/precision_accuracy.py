"""Does bf16 change what a run learns? Val accuracy, bf16 vs fp32, per strategy, over seeds, in one process.

    python benchmarks/precision_accuracy.py --data path/to/hymenoptera_data \\
        --backbone timm:tf_efficientnet_lite0 --weights path/to/tf_efficientnet_lite0_imagenet.pth

Each (strategy, precision, seed) is one `fit` with everything else equal (same split, same augmentation draws,
same head init); the images are decoded once for all runs. Reported per strategy and precision: best and final
val accuracy as mean ± sd over the seeds, and the mean training img/s (a side effect, not the point).
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

from catdog_cli.core.config import TrainConfig
from catdog_cli.core.events import Events
from catdog_cli.data.sources import DecodeCache
from catdog_cli.runtime.device import cpu_bf16_native
from catdog_cli.training.loop import fit


def _list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _mean_sd(xs: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.mean(xs), 4), "sd": round(statistics.stdev(xs), 4) if len(xs) > 1 else 0.0}


def run_one(
    args: argparse.Namespace, strategy: str, precision: str, seed: int, cache: DecodeCache, out: Path
) -> dict[str, Any]:
    config = TrainConfig(
        args.data,
        backbone=args.backbone,
        strategy=strategy,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        weights=args.weights,
        device=args.device,
        seed=seed,
        precision=precision,
    )
    result = fit(config, out / f"{strategy}-{precision}-{seed}", Events(), cache)
    history = result["history"]
    return {
        "strategy": strategy,
        "precision": result["precision"],
        "seed": seed,
        "best_val_acc": result["best_val_acc"],
        "final_val_acc": history[-1]["val_acc"],
        "img_per_s": sum(h["images_per_sec"] for h in history) / len(history),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--backbone", default="timm:tf_efficientnet_lite0")
    parser.add_argument("--weights", required=True, help="pretrained weights: the point is transfer learning")
    parser.add_argument("--strategies", type=_list, default=["freeze", "finetune"])
    parser.add_argument("--precisions", type=_list, default=["fp32", "bf16"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    cache, runs = DecodeCache(), []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="precision-accuracy-") as tmp:
        for strategy in args.strategies:
            for seed in range(args.seeds):
                for precision in args.precisions:  # side by side: the same seed at each precision in turn
                    runs.append(run_one(args, strategy, precision, seed, cache, Path(tmp)))
    table = []
    for strategy in args.strategies:
        for precision in args.precisions:
            mine = [r for r in runs if r["strategy"] == strategy and r["precision"] == precision]
            table.append(
                {
                    "strategy": strategy,
                    "precision": precision,
                    "seeds": len(mine),
                    "best_val_acc": _mean_sd([r["best_val_acc"] for r in mine]),
                    "final_val_acc": _mean_sd([r["final_val_acc"] for r in mine]),
                    "img_per_s": round(statistics.mean(r["img_per_s"] for r in mine), 1),
                }
            )
    print(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
                "device": args.device,
                "cpu_bf16_native": cpu_bf16_native(),
                "torch": torch.__version__,
                "cores": len(os.sched_getaffinity(0)),
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                "wall_s": round(time.time() - started, 1),
                "settings": {k: v for k, v in vars(args).items() if k not in ("strategies", "precisions")},
                "table": table,
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
