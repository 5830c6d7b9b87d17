"""Where and how a model runs: the device, the default batch size, its precision (bf16 on CPUs too), and the CPU
threads it computes with."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TypeVar

import torch

from catdog_cli.core.defaults import THREADS_ENV
from catdog_cli.core.validate import check_device, check_precision
from catdog_cli.errors import CatdogError
from catdog_cli.runtime import cpu_load

M = TypeVar("M", bound=torch.nn.Module)


def resolve_device(name: str) -> torch.device:
    check_device(name)  # auto, cpu or cuda[:N]: mps, xpu, meta are refused before anything is built on them
    configure_threads()  # the CPU computes something for every device: data, augmentation, the optimizer's host side
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CatdogError("--device cuda: no CUDA GPU is visible to PyTorch (use --device cpu or auto)")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CatdogError(f"--device {name}: there are {torch.cuda.device_count()} CUDA GPU(s) (cuda:0 ...)")
    return device


def check_compile() -> None:
    """--compile, refused in one line up front where it would fail at the first step with a long traceback:
    TorchInductor writes C++ (CPU) or Triton launchers (CUDA) that a C compiler builds, into a cache folder."""
    compilers = [os.environ.get("CXX", ""), os.environ.get("CC", ""), "c++", "g++", "clang++", "cc", "gcc"]
    if not any(name and shutil.which(name) for name in compilers):
        raise CatdogError("--compile needs a C/C++ compiler (gcc or clang) on PATH, and there is none: drop --compile")
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or tempfile.gettempdir()
    folder = Path(cache)
    while not folder.exists() and folder != folder.parent:  # the cache folder is made on first use
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CatdogError(
            f"--compile: its cache folder {cache} is not writable (set TORCHINDUCTOR_CACHE_DIR, or drop --compile)"
        )


def cpu_cores() -> int:
    """How many cores this process may run on (`cpu_load.usable_cores`; elsewhere the machine's)."""
    usable = cpu_load.usable_cores()
    return len(usable) if usable is not None else os.cpu_count() or 1


def choose_threads() -> tuple[int, str]:
    """How many threads torch's CPU operators use, and why: --threads, else OMP_NUM_THREADS, else the cores that
    other processes leave free (busy now, `cpu_load`; without /proc/stat the 1-minute load average), at least one.

    PyTorch's default, one thread per core, assumes the cores are free: on a shared machine a thread that waits
    for a taken core holds up every other thread of the operator (benchmarks/README.md: 2 threads on 2 busy cores
    trained slower than 1)."""
    for env, why in ((THREADS_ENV, "--threads"), ("OMP_NUM_THREADS", "OMP_NUM_THREADS")):
        value = os.environ.get(env, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise CatdogError(f"{why} {value}: a whole number of threads, 1 or more")
            return int(value), why
    cores = cpu_cores()
    counted = f"{cores} core" + ("s" if cores != 1 else "")
    busy = cpu_load.busy_cores()
    if busy is not None:
        measure = f"others busy on {busy:.1f}"
    else:  # no /proc/stat (macOS): the 1-minute load average, which counts catdog's own last minute too
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):  # Windows has no load average
            return cores, counted
        measure = f"load {busy:.1f}"
    left = min(cores, cores - round(busy))
    if left < 1:
        return 1, f"{counted}, {measure}: all taken by others, so one thread"
    return left, f"{counted}, {measure}: " + ("all free" if left == cores else f"{left} left free by others")


def configure_threads() -> tuple[int, str]:
    """Set torch's intra-op thread count from `choose_threads` (once per process: the first choice stays, so that
    a run's own load never lowers it later) and say what was chosen."""
    global _THREADS
    if _THREADS is None:
        _THREADS = choose_threads()
        torch.set_num_threads(_THREADS[0])
    return _THREADS


_THREADS: tuple[int, str] | None = None


def threads_record() -> dict[str, int | str]:
    """What run.json, evaluate and predict record about the CPU threads."""
    threads, why = configure_threads()
    return {"threads": threads, "threads_why": why}


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


def cuda_bf16_native(device: torch.device) -> bool:
    """Whether the chosen GPU computes bf16 in hardware (compute capability 8.0 and up: A100, H100, RTX 30xx and
    later). Not `torch.cuda.is_bf16_supported()`: it counts emulation (V100, T4 then get slow bf16 instead of
    fp16 with loss scaling), and it asks the current device, not the chosen one."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


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
        self.why = f"--precision {requested}"
        if requested == "auto":
            self.why = _auto_why(device)
        if device.type == "cuda" and requested != "fp32":
            bf16 = cuda_bf16_native(device)
            if requested == "bf16" and not bf16:
                raise CatdogError("--precision bf16: this GPU has no bf16 (use auto for fp16, or fp32)")
            self.dtype = torch.bfloat16 if bf16 else torch.float16
        elif device.type == "cpu" and (requested == "bf16" or (requested == "auto" and cpu_bf16_native())):
            self.dtype = torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> bool:
        """Backward and optimizer step (loss-scaled at fp16); whether the optimizer stepped. At fp16 the scaler
        skips a step whose gradients overflowed, and then the LR schedule must not step either (it would run
        ahead of the weights, and torch warns): that answer costs a host sync, so it is asked at fp16 only."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if not self.scaler.is_enabled():
            optimizer.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= scale  # the scale drops exactly when the step was skipped

    @classmethod
    def for_inference(cls, device: torch.device, requested: str = "auto") -> Precision:
        """evaluate and predict: `auto` is fp32 on every device, as the exported file computes, so that a
        threshold (--min-confidence) decides the same in catdog and in the file (bf16 moved confidences by up to
        11 points: benchmarks/precision_parity.py). `--precision bf16` still asks for bf16's speed."""
        if requested != "auto":
            return cls(device, requested)
        made = cls(device, "fp32")
        made.why = "auto: inference decides in fp32, as the exported file does"
        return made

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else nullcontext()

    @staticmethod
    def prepare(model: M) -> M:
        """The model in the memory format its convolutions run fastest in (channels_last, at every precision)."""
        return model.to(memory_format=torch.channels_last)

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")


def _auto_why(device: torch.device) -> str:
    if device.type == "cuda":
        return "auto: bf16 autocast on this GPU" if torch.cuda.is_bf16_supported() else "auto: this GPU has no bf16"
    if cpu_bf16_native():
        return "auto: this CPU computes bf16 natively (AVX512-BF16 or AMX)"
    return "auto: this CPU has no native bf16 (emulated bf16 is slower than fp32)"
