"""Compute only: fp32 vs bf16 autocast, contiguous vs channels_last, per backbone, side by side in one process.

    python benchmarks/precision_speed.py --backbones resnet18,resnet34 --image-size 112 --rounds 3

What `--precision auto` rests on. No data: one random batch, so decoding and the input pipeline play no part.
Per backbone, four variants (fp32, fp32 + channels_last, bf16, bf16 + channels_last; catdog's `auto` on a CPU
with native bf16 is the last, fp32 is the first), each its own random-init model and AdamW. A round times, for
every variant in turn, `--steps` training steps (forward, loss, backward, optimizer) and `--steps` inference
batches (`inference_mode`), after one untimed step of each; the median over `--rounds` rounds is reported, and
each variant's ratio to fp32. Interleaving the variants spreads the noise of a shared machine over all of them.

Besides wall-clock img/s, `cpu_img_per_s` divides by the process's CPU time (all its threads): on a machine
that others load, wall time measures the contention, while CPU time at `--threads 1` still measures the work
(with more threads it also counts OpenMP's spinning at barriers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from catdog_cli.models.backbones import build_model
from catdog_cli.runtime.device import cpu_bf16_native

VARIANTS = {
    "fp32": (None, False),
    "fp32_channels_last": (None, True),
    "bf16": (torch.bfloat16, False),
    "bf16_channels_last": (torch.bfloat16, True),
}


def _timed(fn: Callable[[], None], steps: int, batch: int) -> tuple[float, float]:
    """Images per second of wall time and of the process's CPU time."""
    fn()  # untimed: kernels, allocator
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    return steps * batch / (time.perf_counter() - wall), steps * batch / (time.process_time() - cpu)


def variant_steps(
    backbone: str,
    dtype: torch.dtype | None,
    channels_last: bool,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
) -> tuple[Callable[[], None], Callable[[], None]]:
    """One training step and one inference batch of a fresh model in this variant."""
    model = build_model(backbone, 2, "none", str(device), seed=0)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def cast():
        return torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()

    def train() -> None:
        model.train()
        with cast():
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer() -> None:
        model.eval()
        with torch.inference_mode(), cast():
            model(x).float().softmax(1)

    return train, infer


def measure(backbone: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, 2, (args.batch_size,), device=device)
    steps = {name: variant_steps(backbone, dtype, cl, x, y, device) for name, (dtype, cl) in VARIANTS.items()}
    train: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    infer: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    loads = []
    for _ in range(args.rounds):
        for name, (train_step, infer_step) in steps.items():
            train[name].append(_timed(train_step, args.steps, args.batch_size))
            infer[name].append(_timed(infer_step, args.steps, args.batch_size))
        loads.append(round(os.getloadavg()[0], 2))
    row: dict[str, Any] = {"backbone": backbone, "load_1min_per_round": loads}
    for what, table in (("train", train), ("infer", infer)):
        wall = {name: statistics.median(w for w, _ in v) for name, v in table.items()}
        cpu = {name: statistics.median(c for _, c in v) for name, v in table.items()}
        row[what] = {
            name: {
                "img_per_s": round(wall[name], 1),
                "x_fp32": round(wall[name] / wall["fp32"], 2),
                "cpu_img_per_s": round(cpu[name], 1),
                "cpu_x_fp32": round(cpu[name] / cpu["fp32"], 2),
                "rounds": [round(w, 1) for w, _ in table[name]],
            }
            for name in VARIANTS
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backbones", default="resnet18,resnet34", type=lambda s: [b.strip() for b in s.split(",") if b.strip()]
    )
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: PyTorch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result: dict[str, Any] = {
        "device": args.device,
        "cpu_bf16_native": cpu_bf16_native(),
        "cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "settings": {k: v for k, v in vars(args).items() if k != "backbones"},
        "backbones": [],
    }
    for backbone in args.backbones:
        result["backbones"].append(measure(backbone, args, device))
        print(json.dumps(result["backbones"][-1]), file=sys.stderr, flush=True)  # progress, one line each
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
