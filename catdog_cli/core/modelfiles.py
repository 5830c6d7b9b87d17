"""Which kind of model file a path is (a catdog checkpoint, an exported ONNX or TorchScript file) and which runtime
runs it; torch-free, so a wrong combination of file and options is refused before torch loads.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from catdog_cli.core.defaults import RUNTIMES
from catdog_cli.errors import CatdogError

CHECKPOINT, ONNX, TORCHSCRIPT = "checkpoint", "onnx", "torchscript"
FILE_RUNTIMES = {ONNX: "onnxruntime", TORCHSCRIPT: "torchscript"}  # an exported file runs in its own runtime


def model_kind(path: Path | str) -> str:
    """checkpoint, onnx or torchscript: ONNX by its suffix, TorchScript by the code archive torch.jit.save writes
    (a checkpoint is a zip too, of pickled tensors only)."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return ONNX
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):  # not a zip: an older torch.save format, or not a model; torch says
        return CHECKPOINT
    return TORCHSCRIPT if any(name.endswith("/constants.pkl") for name in names) else CHECKPOINT


def check_runtime(path: Path | str, runtime: str, precision: str = "auto", torch_only: tuple[str, ...] = ()) -> str:
    """The model file's kind, once `--runtime`, `--precision` and the options given that need the PyTorch model
    (`torch_only`: --tta, --explain) are known to fit it (one-line refusals).

    An exported file computes in fp32 in its own runtime; a checkpoint runs in PyTorch or, through an export cached
    beside it, in onnxruntime."""
    if runtime not in RUNTIMES:
        raise CatdogError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    kind = model_kind(path)
    own = FILE_RUNTIMES.get(kind)
    if own is not None and runtime not in ("auto", own):
        raise CatdogError(f"{path} is an exported {kind} file: it runs in {own}, not --runtime {runtime}")
    if own is not None and precision == "bf16":
        raise CatdogError(f"{own} runs this model in fp32: --precision bf16 needs a checkpoint in PyTorch")
    if own is not None and torch_only:
        raise CatdogError(f"{torch_only[0]} needs the PyTorch model: give the checkpoint, not an exported file")
    if runtime == "onnxruntime" and precision == "bf16":
        raise CatdogError("onnxruntime runs this model in fp32: --precision bf16 needs --runtime torch or auto")
    if runtime == "onnxruntime" and "--tta" in torch_only:  # --explain runs PyTorch beside it
        raise CatdogError("--tta needs the PyTorch model: use --runtime torch or auto")
    return kind
