"""What this machine offers catdog, probed without assuming that torch works: the installed versions, whether
torch and torchvision load as a pair, CUDA and its GPUs, the CPU. `catdog doctor` shows it; `stack_failure`
turns a half-broken install met by any command into one line that names the fix.

Importable without torch: each probe imports what it looks at, and a failure is a finding, not an exception.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from catdog_cli import __version__

# the packages catdog imports at run time, by the extra that installs them (pyproject.toml)
EXTRAS: dict[str, tuple[str, ...]] = {"timm": ("timm",), "export": ("onnx", "onnxscript", "onnxruntime")}
# the packages whose import, failing, means the install is broken (not catdog's input)
STACK = ("torch", "torchvision", "timm", "onnxruntime", "onnx", "onnxscript", "PIL")
REINSTALL_TORCH = (
    "reinstall both from one index: pip install --force-reinstall torch torchvision --index-url "
    "https://download.pytorch.org/whl/cpu (with an NVIDIA GPU: the command for your CUDA from pytorch.org)"
)


@dataclass
class Finding:
    """One line of the doctor's report: `fix` is set when it is a problem; `blocking` when a command would stop."""

    topic: str
    text: str
    fix: str | None = None
    blocking: bool = False

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, False)}


def installed(package: str) -> str | None:
    """The installed version of a distribution, read from its metadata (nothing is imported), or None."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _package_dirs() -> dict[str, Path]:
    """Where each stack package lives on disk, found without importing it."""
    found = {}
    for name in STACK:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.submodule_search_locations:
            found[name] = Path(next(iter(spec.submodule_search_locations))).resolve()
    return found


def _failed_import(tb: TracebackType | None) -> str | None:
    """The stack package whose module code (an import, not a call) the traceback passes through, if any."""
    dirs = _package_dirs()
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "<module>":
            path = Path(code.co_filename).resolve()
            for name, folder in dirs.items():
                if path.is_relative_to(folder):
                    return name
        tb = tb.tb_next
    return None


def stack_failure(exc: BaseException) -> str | None:
    """One line naming the fix when `exc` is a broken install of the stack (torch, torchvision, timm, the ONNX
    packages, Pillow) failing to import; None for anything else. A CPU torch beside a CUDA torchvision of
    another release fails inside `import torchvision` with "operator torchvision::nms does not exist"."""
    package = _failed_import(exc.__traceback__)
    if package is None and isinstance(exc, ImportError) and (exc.name or "").split(".")[0] in STACK:
        package = (exc.name or "").split(".")[0]
    if package is None:
        return None
    if package in ("torch", "torchvision"):
        versions = f"torch {installed('torch') or 'missing'} with torchvision {installed('torchvision') or 'missing'}"
        return f"{versions} does not load ({_first_line(exc)}); {REINSTALL_TORCH}; `catdog doctor` checks the rest"
    dist = "pillow" if package == "PIL" else package
    return (
        f"{dist} {installed(dist) or '(missing)'} does not load with torch {installed('torch')} ({_first_line(exc)}); "
        f"reinstall it: pip install --force-reinstall {dist}"
    )


def versions() -> list[Finding]:
    """catdog, Python and every package catdog uses, from their metadata."""
    found = [Finding("catdog", __version__), Finding("python", f"{platform.python_version()} ({sys.executable})")]
    for dist in ("torch", "torchvision", "pillow", "typer", "rich"):
        version = installed(dist)
        fix = None if version else f"pip install {dist} (catdog needs it: pip install -e . in the clone)"
        found.append(Finding(dist, version or "missing", fix, blocking=version is None))
    for extra, packages in EXTRAS.items():
        missing = [p for p in packages if installed(p) is None]
        have = ", ".join(f"{p} {installed(p)}" for p in packages if p not in missing)
        uses = "timm:NAME backbones" if extra == "timm" else "catdog export --format onnx"
        fix = f"for {uses}: pip install {' '.join(missing)} (in the clone: pip install -e '.[{extra}]')"
        found.append(Finding(f"[{extra}]", have or "not installed", fix if missing else None))
    return found


# torchvision's minor version follows torch's: 0.17 goes with 2.2, 0.29 with 2.14 (pytorch.org's table)
TORCHVISION_MINOR_OFFSET = 15


def _release(version: str) -> tuple[int, int]:
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def torch_pair() -> list[Finding]:
    """Whether torch imports, torchvision imports with its compiled operators, and both are one release and one
    build (CPU, or the same CUDA)."""
    try:
        import torch
    except Exception as exc:  # any failure is the finding
        return [Finding("torch", f"does not import ({_first_line(exc)})", REINSTALL_TORCH, blocking=True)]
    try:
        import torchvision

        torch.ops.torchvision.nms  # noqa: B018 - the compiled operators registered (a half-broken pair has none)
    except Exception as exc:
        return [Finding("torchvision", f"does not load ({_first_line(exc)})", REINSTALL_TORCH, blocking=True)]
    torch_build, vision_build = _cuda(torch.version.cuda), _cuda(getattr(torchvision.version, "cuda", None))
    builds = f"torch {torch.__version__} ({_build(torch_build)}), torchvision {torchvision.__version__}"
    (tmajor, tminor), (vmajor, vminor) = _release(torch.__version__), _release(torchvision.__version__)
    if tmajor == 2 and vmajor == 0 and vminor != tminor + TORCHVISION_MINOR_OFFSET:
        return [Finding("torch pair", f"{builds}: not one release", REINSTALL_TORCH, blocking=True)]
    if torch_build != vision_build:
        text = f"{builds}, built for {_build(vision_build)}: different builds"
        return [Finding("torch pair", text, REINSTALL_TORCH, blocking=True)]
    return [Finding("torch pair", f"{builds}: a working pair (compiled operators load)")]


def _cuda(version: str | int | None) -> str | None:
    """'12.8' from torch's '12.8' or torchvision's 12080 (its own spelling); None for a CPU build."""
    if not version:
        return None
    if "." in str(version):
        return ".".join(str(version).split(".")[:2])
    number = int(version)
    return f"{number // 1000}.{number % 1000 // 10}"


def _build(cuda: str | None) -> str:
    return f"CUDA {cuda}" if cuda else "CPU"


def gpus() -> list[Finding]:
    """The CUDA GPUs torch sees: name, memory, bf16. None is not a problem (catdog runs on the CPU)."""
    import torch

    if not torch.cuda.is_available():
        build = torch.version.cuda
        smaller = f" (this torch is a CUDA {build} build: a CPU build is ~5 GB smaller)" if build else ""
        return [Finding("GPU", f"none visible: catdog runs on the CPU{smaller}")]
    found = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        with torch.cuda.device(i):
            bf16 = "bf16" if torch.cuda.is_bf16_supported() else "no bf16 (fp16 with loss scaling)"
        found.append(Finding(f"cuda:{i}", f"{props.name}, {props.total_memory / 2**30:.1f} GiB, {bf16}"))
    return found


def cpu() -> list[Finding]:
    """Cores, native bf16, the threads torch will use and why, the load other processes put on the cores."""
    from catdog_cli.runtime.device import configure_threads, cpu_bf16_native, cpu_cores

    threads, why = configure_threads()
    bf16 = "native bf16 (AVX512-BF16 or AMX)" if cpu_bf16_native() else "no native bf16"
    found = [Finding("CPU", f"{_cpu_name()}, {cpu_cores()} cores, {bf16}")]
    found.append(Finding("threads", f"{threads} ({why}); --threads N or OMP_NUM_THREADS=N overrides"))
    return found


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def precisions() -> list[Finding]:
    """The precision each command picks at --precision auto on --device auto, and why."""
    from catdog_cli.runtime.device import Precision, resolve_device

    device = resolve_device("auto")
    training = Precision(device)
    inference = Precision.for_inference(device)
    return [
        Finding("train, compare, lr-find", f"{device}, {training.name} ({training.why})"),
        Finding("evaluate, predict", f"{device}, {inference.name} ({inference.why})"),
        Finding("export", "cpu, fp32 (the file computes in fp32; its parity is proven against predict's default)"),
    ]


def load() -> str | None:
    """'1.7 1.4 1.1' (1, 5, 15 minutes), or None where the system has none."""
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return None
