"""Where and how a model runs: the device, its precision (bf16 on CPUs too), the LR schedule, and leaving
cleanly on a signal."""

from __future__ import annotations

import math
import signal
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TypeVar

import torch

from catdog_cli.config import check_device, check_precision
from catdog_cli.errors import CatdogError

M = TypeVar("M", bound=torch.nn.Module)


def resolve_device(name: str) -> torch.device:
    check_device(name)  # auto, cpu or cuda[:N]: mps, xpu, meta are refused before anything is built on them
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CatdogError("--device cuda: no CUDA GPU is visible to PyTorch (use --device cpu or auto)")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CatdogError(f"--device {name}: there are {torch.cuda.device_count()} CUDA GPU(s) (cuda:0 ...)")
    return device


def default_batch_size(device: torch.device) -> int:
    return 64 if device.type == "cuda" else 32


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), where bf16 autocast about doubles
    convolution throughput; elsewhere oneDNN emulates bf16 and fp32 is faster."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(probe is not None for probe in probes):
        return any(probe() for probe in probes if probe is not None)
    try:  # a torch without the probes: ask the kernel
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


class Precision:
    """How a model computes on its device: `requested` is auto, fp32 or bf16 (PRECISIONS).

    auto: on CUDA bf16 autocast where the GPU supports it, fp16 with loss scaling otherwise; on the CPU bf16
    where the hardware does bf16 natively (`cpu_bf16_native`), fp32 elsewhere. The model is channels_last at
    every precision, as catdog's batches are: oneDNN's and cuDNN's fast convolutions want it.
    """

    def __init__(self, device: torch.device, requested: str = "auto"):
        check_precision(requested)
        self.device = device
        self.dtype = None
        if device.type == "cuda" and requested != "fp32":
            bf16 = torch.cuda.is_bf16_supported()
            if requested == "bf16" and not bf16:
                raise CatdogError("--precision bf16: this GPU has no bf16 (use auto for fp16, or fp32)")
            self.dtype = torch.bfloat16 if bf16 else torch.float16
        elif device.type == "cpu" and (requested == "bf16" or (requested == "auto" and cpu_bf16_native())):
            self.dtype = torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else nullcontext()

    @staticmethod
    def prepare(model: M) -> M:
        """The model in the memory format its convolutions run fastest in (channels_last, at every precision)."""
        return model.to(memory_format=torch.channels_last)

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")


def warmup_cosine(total_steps: int, warmup: int | None = None) -> Callable[[int], float]:
    """LR multiplier: linear warm-up (by default over 5 % of the steps, at most 100), then cosine decay to zero."""
    if warmup is None:
        warmup = min(100, max(1, total_steps // 20))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def lr_schedule(optimizer: torch.optim.Optimizer, total_steps: int | Callable[[int], float]
                ) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up then cosine decay to zero at `total_steps` (or the LR multiplier given)."""
    factor = total_steps if callable(total_steps) else warmup_cosine(total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class StopRequest:
    """SIGINT/SIGTERM during training: finish the current step, save, and leave cleanly."""

    def __init__(self):
        self.requested = False

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        def handler(signum, frame):
            if self.requested:  # a second Ctrl-C means now
                raise KeyboardInterrupt
            self.requested = True

        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for s in previous:
                signal.signal(s, handler)
        except ValueError:  # not the main thread: signals stay with whoever owns them
            previous = {}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
