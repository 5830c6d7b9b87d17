"""CPU threads: PyTorch's intra-op threads vs catdog's decode threads and DataLoader workers, in one process.

    python benchmarks/threads.py --data path/to/hymenoptera_data --predict path/to/catdog/test1

On a CPU, decoding and the model share the cores. Measured side by side, one row per setting:
- train, streamed: `catdog train`'s step loop with the split decoded per batch (`--cache-gib 0`) by N
  DataLoader worker processes (0: in the training process), with T intra-op threads; and, as the reference,
  the resident split (decoded once) with the default threads;
- predict: `catdog predict`'s path (decode threads overlapping the model) with N decode threads, T intra-op.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from pipeline import catdog_img_per_s, save_untrained

from catdog_cli.data.decode import default_workers
from catdog_cli.data.sources import DecodeCache
from catdog_cli.inference.predict import classify


def _counts(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a folder with train/ and val/ (hymenoptera)")
    parser.add_argument("--predict", type=Path, required=True, help="a folder of images to classify")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs (after one warm-up)")
    parser.add_argument("--threads", type=_counts, default=sorted({1, default_workers()}), help="intra-op threads")
    parser.add_argument(
        "--workers",
        type=_counts,
        default=sorted({0, 1, default_workers()}),
        help="DataLoader workers (train) and decode threads (predict; 0 means 1)",
    )
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
    result: dict[str, Any] = {
        "device": "CPU",
        "cores": default_workers(),
        "default_threads": default_threads,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "torch": torch.__version__,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
    }
    train, predict = [], []
    common = (args.data, args.backbone, "finetune", args.batch_size, args.image_size, torch.device("cpu"), args.epochs)
    resident, _, precision = catdog_img_per_s(*common, DecodeCache())
    result["precision"] = precision
    train.append({"source": "resident", "threads": default_threads, "workers": None, "img_per_s": round(resident, 1)})
    for threads in args.threads:
        torch.set_num_threads(threads)
        for workers in args.workers:
            speed, _, _ = catdog_img_per_s(*common, DecodeCache(), workers=workers, cache_gib=0.0)
            train.append({"source": "streamed", "threads": threads, "workers": workers, "img_per_s": round(speed, 1)})
    with tempfile.TemporaryDirectory(prefix="catdog-threads-") as tmp:
        model = save_untrained(args.backbone, 2, args.image_size, Path(tmp) / "model.pt")
        classify(model, [args.predict], batch_size=args.batch_size, device="cpu")  # page cache, kernels
        for threads in args.threads:
            torch.set_num_threads(threads)
            for workers in [w for w in args.workers if w > 0]:
                done = classify(model, [args.predict], batch_size=args.batch_size, device="cpu", workers=workers)
                predict.append(
                    {"threads": threads, "decode_threads": workers, "img_per_s": round(done["images_per_sec"], 1)}
                )
    torch.set_num_threads(default_threads)
    result |= {"train": train, "predict": predict, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
