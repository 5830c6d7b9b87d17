"""`catdog export`: a trained model as one file that runs without catdog (ONNX or TorchScript), proven to agree.

Exported models usually disagree with the framework they came from because the preprocessing is left for the
user to rewrite. Here the file holds everything between the crop and the answer, and its metadata spells out the
rest step by step (contract.py). After writing, catdog proves parity against its own predict on real images
(parity.py); the export fails, leaving no file, if any probability differs by more than the tolerance or any
label differs. The file is written under a hidden name and published only then, never replacing one.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from catdog_cli.core.defaults import INT8_TOLERANCE
from catdog_cli.core.events import Events
from catdog_cli.core.files import publish_new, writing
from catdog_cli.core.records import ExportResult, Parity, QuantCheck
from catdog_cli.core.validate import EXPORT_FORMATS, check_export
from catdog_cli.data.dataset import Split
from catdog_cli.errors import CatdogError
from catdog_cli.inference.contract import Exportable, metadata
from catdog_cli.inference.parity import (
    PARITY_IMAGES,
    RUNNERS,
    TOLERANCE,
    check_parity,
    own_dataset,
    parity_images,
    spread,
)
from catdog_cli.inference.quantize import CALIBRATION_IMAGES, quantize_checked
from catdog_cli.inference.runtimes import INPUT, METADATA_FILE, OUTPUT, SCORE, set_onnx_metadata
from catdog_cli.inference.trained import TrainedModel


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporters print progress to stdout (which --json keeps for its document) and warn that TorchScript is
    deprecated: to stderr with the first, away with the second."""
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def _example(size: int) -> torch.Tensor:
    """A batch of two: a batch of one would let the exporters fix the batch size at 1."""
    return torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def write_onnx(module: Exportable, size: int, path: Path, meta: dict[str, Any]) -> None:
    import onnx

    with _quiet():
        program = torch.onnx.export(
            module,
            (_example(size),),
            dynamo=True,
            input_names=[INPUT],
            output_names=[OUTPUT, SCORE] if module.detector is not None else [OUTPUT],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
    proto = program.model_proto
    set_onnx_metadata(proto, meta)  # one entry per key, each a JSON value: json.loads(meta["classes"])
    onnx.save_model(proto, str(path))


def write_torchscript(module: Exportable, size: int, path: Path, meta: dict[str, Any]) -> None:
    """Saved to memory first, then written by Python: torch's writer aborts the whole interpreter (from C++, in a
    destructor) when the disk is full; Python's write raises an error that says so."""
    buffer = io.BytesIO()
    with _quiet():
        traced = torch.jit.trace(module, _example(size))
        torch.jit.save(traced, buffer, _extra_files={METADATA_FILE: json.dumps(meta)})
    path.write_bytes(buffer.getbuffer())


WRITERS = {"onnx": write_onnx, "torchscript": write_torchscript}


def export_model(
    checkpoint: Path | str,
    fmt: str = "onnx",
    out: Path | str | None = None,
    parity_folder: Path | str | None = None,
    events: Events | None = None,
    tolerance: float = TOLERANCE,
    int8: float | None = None,
) -> ExportResult:
    """Write the model to `out` (default: beside the checkpoint) and prove parity; never replaces a file.
    `int8`: quantize the ONNX file, refused when it loses more than this many accuracy points (quantize.py).

    The file is written under a hidden temporary name and given its real name only once parity holds: a failed
    check, or an error, leaves nothing behind.
    """
    events = events or Events()
    out = check_export(checkpoint, fmt, out, parity_folder, int8 is not None, INT8_TOLERANCE if int8 is None else int8)
    checkpoint = Path(checkpoint)
    trained = TrainedModel.load(checkpoint, "cpu", precision="fp32")
    images, source = parity_images(trained, parity_folder)
    return write_proven(checkpoint, fmt, out, images, source, events, tolerance, trained, int8)


def write_proven(
    checkpoint: Path,
    fmt: str,
    out: Path,
    images: list[Path],
    source: str,
    events: Events,
    tolerance: float = TOLERANCE,
    trained: TrainedModel | None = None,
    int8: float | None = None,
) -> ExportResult:
    """Export to `out` (or, in a race for that name, the next free one), proven on `images` (up to
    PARITY_IMAGES of them; none: the model's own val split), and with `int8` quantized and checked on the run's own
    val split (at most that many accuracy points lost); nothing is left behind when a check fails."""
    trained = trained or TrainedModel.load(checkpoint, "cpu", precision="fp32")
    images, source = (spread(images, PARITY_IMAGES), source) if images else parity_images(trained, None)
    meta = metadata(trained, checkpoint)
    module = Exportable(trained.model, trained.preset, trained.temperature, trained.detector).eval()
    # a hidden folder beside OUT: the exporters create the file as open() would (the user's umask), and the
    # finished file is then linked to its name on the same file system
    workdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp = workdir / out.name
    try:
        events.note(f"exporting {checkpoint} to {fmt}")
        with writing(out):
            WRITERS[fmt](module, trained.preset.image_size, tmp, meta)
        parity = check_parity(fmt, tmp, trained, checkpoint, images, source, events, tolerance)
        if not parity["passed"]:
            raise CatdogError(
                f"the exported {fmt} model disagrees with catdog predict on {parity['images']} images of {source} "
                f"(largest probability difference {parity['max_abs_diff']:.2e}, tolerance {tolerance:.0e}; labels "
                f"agree on {parity['label_agreement']:.1%}{_score_diff(parity)}); nothing was written"
            )
        check = None if int8 is None else _quantized(tmp, trained, meta, events, int8)
        final = publish_new(tmp, out.parent, out.name)  # in a race for the name, the next free one: never replaced
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result: ExportResult = {
        "kind": "export",
        "checkpoint": str(checkpoint),
        "format": fmt,
        "out": str(final),
        "bytes": final.stat().st_size,
        "metadata": meta,
        "parity": parity,
    }
    if check is not None:
        result["metadata"], result["int8"] = {**meta, "quantized": check}, check
    return result


def _quantized(path: Path, trained: TrainedModel, meta: dict[str, Any], events: Events, tolerance: float) -> QuantCheck:
    """The ONNX file at `path` replaced by its int8 version, calibrated on the run's training images and checked on
    its val split (quantize.py); a refusal in one line when it does not hold."""
    dataset = own_dataset(trained, "to calibrate and check int8 on")
    if "train" not in dataset.splits or "val" not in dataset.splits:
        raise CatdogError(f"{dataset.root} has no train and val split to calibrate and check int8 on")
    train = dataset.split("train")
    calibration = Split(spread(train.paths, CALIBRATION_IMAGES), [0] * min(len(train), CALIBRATION_IMAGES))
    quantized = path.with_name("int8-" + path.name)
    events.note(f"quantizing to int8 (calibrated on {len(calibration)} training images)")
    check = quantize_checked(
        path, quantized, trained.preset.eval_spec(), calibration, dataset.split("val"), meta, events, tolerance
    )
    quantized.replace(path)
    return check


def _score_diff(parity: Parity) -> str:
    return f"; unknown scores differ by {parity['unknown_score_diff']:.2e}" if "unknown_score_diff" in parity else ""


def read_metadata(path: Path | str) -> dict[str, Any]:
    """The metadata of a file catdog exported (either format)."""
    path = Path(path)
    return RUNNERS["onnx" if path.suffix == EXPORT_FORMATS["onnx"] else "torchscript"](path).meta
