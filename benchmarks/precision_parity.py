"""How far `catdog predict --precision bf16` is from fp32 (predict's default, `auto`, since issue 26) on real images.

An exported file computes in fp32, so this is also the gap between an export and predict's default there.

    python benchmarks/precision_parity.py runs/a/best.pt runs/b/best.pt [--split val] [--precision bf16]

Prints one JSON line per checkpoint: images, largest |probability difference| over every image and class,
mean of it, and the share of images with the same top label.
"""

from __future__ import annotations

import argparse
import json

import torch

from catdog_cli.core.events import Events
from catdog_cli.inference.evaluate import _dataset_of
from catdog_cli.inference.predict import predict
from catdog_cli.inference.trained import TrainedModel


def gap(checkpoint: str, split: str, precision: str) -> dict[str, float | int | str]:
    trained = TrainedModel.load(checkpoint, "cpu", precision="fp32")
    paths = _dataset_of(trained.checkpoint, None, Events()).split(split).paths  # the run's own split
    probs = {}
    for name in ("fp32", precision):
        rows = predict(checkpoint, paths, top_k=len(trained.classes), device="cpu", precision=name, runtime="torch")
        probs[name] = torch.tensor(
            [[{t["label"]: t["confidence"] for t in r["top"]}[c] for c in trained.classes] for r in rows if "top" in r]
        )
    diff = (probs["fp32"] - probs[precision]).abs()
    same = (probs["fp32"].argmax(1) == probs[precision].argmax(1)).float().mean().item()
    return {
        "checkpoint": checkpoint,
        "split": split,
        "precision": precision,
        "images": len(diff),
        "max_abs_diff": diff.max().item(),
        "mean_abs_diff": diff.mean().item(),
        "label_agreement": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--split", default="val")
    parser.add_argument("--precision", default="bf16", choices=["bf16"])
    args = parser.parse_args()
    for checkpoint in args.checkpoints:
        print(json.dumps(gap(checkpoint, args.split, args.precision)), flush=True)


if __name__ == "__main__":
    main()
