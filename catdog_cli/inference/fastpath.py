"""Which runner a model file gets (`open_runner`, the seam predict and evaluate go through), and the export
cached beside a checkpoint that makes the default fast on a CPU.

`--runtime auto` runs an exported file in its own runtime, and a checkpoint on the CPU (fp32 or auto precision,
without test-time augmentation) in onnxruntime: issue 27 measured Lite0's model alone at 342.9 img/s in
onnxruntime here, 124.7 in TorchScript and 24-97 eager; catdog's own end-to-end figures (benchmarks/README.md)
were taken under heavy load, and a quiet rerun is owed. The export is made once per checkpoint content and catdog
version, proven against PyTorch like `catdog export` proves its files, and kept in a hidden folder beside the
checkpoint (`.catdog-cache/`), never under a name a user chose. Where it cannot be made, the checkpoint runs in
PyTorch and a note says why.
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from pathlib import Path

from catdog_cli import __version__
from catdog_cli.core.events import Events
from catdog_cli.core.modelfiles import ONNX, TORCHSCRIPT, check_runtime
from catdog_cli.core.validate import ONNX_PACKAGES
from catdog_cli.errors import CatdogError
from catdog_cli.inference.export import write_proven
from catdog_cli.inference.runtimes import OnnxRunner, Runner, TorchRunner, TorchScriptRunner, first_line

CACHE_DIR = ".catdog-cache"  # beside a checkpoint: its onnxruntime exports, one per checkpoint content
# under --runtime auto, fewer images than this stay in PyTorch until the export exists: making it costs about as much
# as classifying a few hundred images in PyTorch here (benchmarks/README.md, the first call)
AUTO_MIN_IMAGES = 100


def cache_path(checkpoint: Path) -> Path:
    """Where the onnxruntime export of this checkpoint's content (and of this catdog's export) is kept."""
    digest = hashlib.sha256()
    with open(checkpoint, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    digest.update(__version__.encode())
    return checkpoint.parent / CACHE_DIR / f"{checkpoint.stem}-{digest.hexdigest()[:16]}.onnx"


def _onnx_ready() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ONNX_PACKAGES)


def open_runner(
    path: Path | str,
    device: str = "auto",
    precision: str = "auto",
    tta: str | None = None,
    runtime: str = "auto",
) -> Runner:
    """The runner for a checkpoint or an exported file (exported: its own runtime); a checkpoint's model is built
    only if it runs in PyTorch in the end (`for_images` decides)."""
    path = Path(path)
    kind = check_runtime(path, runtime, precision, ("--tta",) if tta is not None else ())
    if kind == ONNX:
        return OnnxRunner(path)
    if kind == TORCHSCRIPT:
        return TorchScriptRunner(path)
    runner = TorchRunner(path, device, precision, tta)
    if runtime == "onnxruntime" and runner.device.type != "cpu":
        raise CatdogError("--runtime onnxruntime runs on the CPU: use --device cpu (or --runtime torch on the GPU)")
    if runtime == "onnxruntime" and not _onnx_ready():
        raise CatdogError(f"--runtime onnxruntime needs {', '.join(ONNX_PACKAGES)}: pip install them")
    runner.onnx = {"torch": "never", "onnxruntime": "always"}.get(runtime, "auto")
    return runner


def for_images(runner: Runner, images: list[Path], events: Events) -> Runner:
    """The runner a pass over `images` runs in: a checkpoint goes to onnxruntime when asked to, or under `auto` on
    the CPU in fp32 (auto precision that is fp32 here, no TTA) once its cached export exists or the pass has
    AUTO_MIN_IMAGES images to pay for making it (proven on up to 32 of them). Anywhere else, or when that export
    cannot be made (said why), it stays in PyTorch."""
    if not isinstance(runner, TorchRunner) or runner.onnx == "never":
        return runner
    if runner.onnx == "auto":
        fits = runner.device.type == "cpu" and runner.tta is None and runner.requested != "bf16"
        worth = cache_path(runner.path).is_file() or len(images) >= AUTO_MIN_IMAGES
        if not (fits and worth and _onnx_ready()):
            return runner
    try:
        return OnnxRunner(cached_export(runner, images, events), behind=runner)
    except CatdogError as exc:
        if runner.onnx == "always":
            raise
        events.note(f"running in PyTorch: {exc}")
        return runner


def cached_export(runner: TorchRunner, images: list[Path], events: Events) -> Path:
    """The runner's checkpoint's ONNX export in its cache folder, made (from the runner's model, proven) on first use;
    never a user's file."""
    checkpoint, target = runner.path, cache_path(runner.path)
    if target.is_file():
        return target
    try:
        target.parent.mkdir(exist_ok=True)
    except OSError as exc:
        raise CatdogError(f"cannot cache an export beside {checkpoint} ({exc.strerror or exc})") from None
    start = time.perf_counter()
    events.note(f"exporting {checkpoint} for onnxruntime once (cached in {target.parent})")
    try:
        made = write_proven(checkpoint, "onnx", target, images, "the images at hand", events, trained=runner.model)
        final = Path(made["out"])
    except CatdogError:
        raise
    except Exception as exc:  # an exporter that cannot trace this model: PyTorch runs it
        raise CatdogError(f"could not export it for onnxruntime ({first_line(exc)})") from None
    events.note(f"exported and proven in {time.perf_counter() - start:.1f} s: {final}")
    return final
