"""int8 (`catdog export --int8`): the exported ONNX file quantized statically by onnxruntime, kept only where it holds.

Static quantization (QDQ, weights per channel, activations uint8) is calibrated on up to CALIBRATION_IMAGES of the
run's own training images, then checked on its val split against the fp32 file: refused, leaving no file, when it
loses more than `tolerance` points of accuracy or disagrees with the fp32 file's labels on more than that share of
images. The check's figures go into the file's metadata (`quantized`), into export's result, and are printed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from catdog_cli.core.defaults import INT8_TOLERANCE
from catdog_cli.core.events import Events
from catdog_cli.core.records import QuantCheck
from catdog_cli.data.dataset import Split
from catdog_cli.data.decode import ImageError, ImageSpec
from catdog_cli.errors import CatdogError
from catdog_cli.inference.runtimes import OnnxRunner, set_onnx_metadata

CALIBRATION_IMAGES = 64  # training images the activation ranges are calibrated on


def crops(split: Split, spec: ImageSpec, events: Events, what: str) -> tuple[np.ndarray, list[int]]:
    """uint8 (N, C, C, 3) crops of the split's readable images, and their labels."""
    events.task(what, len(split))
    images, labels = [], []
    for i in range(len(split)):
        with contextlib.suppress(ImageError):
            images.append(spec.decode(split, i).image.permute(1, 2, 0).numpy())
            labels.append(split.labels[i])
        events.advance()
    if not images:
        raise CatdogError(f"no readable images to {what} on")
    return np.stack(images), labels


def quantize(fp32: Path, out: Path, spec: ImageSpec, calibration: Split, events: Events) -> None:
    """Write the int8 version of the ONNX file `fp32` to `out`, its activation ranges calibrated on `calibration`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    images, _ = crops(calibration, spec, events, "calibrate int8")
    name = OnnxRunner(fp32).input

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{name: images[i : i + 8]} for i in range(0, len(images), 8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    prepared = out.with_name(out.stem + ".pre.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    prepared.unlink()


def check(fp32: Path, int8: Path, spec: ImageSpec, val: Split, events: Events, tolerance: float) -> QuantCheck:
    """Accuracy of both files on `val`, and how often their labels agree; passed when int8 holds within tolerance."""
    images, labels = crops(val, spec, events, "check int8")
    truth = torch.tensor(labels)
    found = {}
    for key, path in (("fp32", fp32), ("int8", int8)):
        runner = OnnxRunner(path)
        probs = [runner.run(torch.from_numpy(images[i : i + 32]))[runner.output] for i in range(0, len(images), 32)]
        found[key] = torch.cat(probs).argmax(1)
    n = len(labels)
    correct = {key: int((pred == truth).sum()) for key, pred in found.items()}
    changed = int((found["fp32"] != found["int8"]).sum())
    return {
        "images": len(labels),
        "accuracy_fp32": correct["fp32"] / n,
        "accuracy_int8": correct["int8"] / n,
        "points_lost": 100 * (correct["fp32"] - correct["int8"]) / n,
        "label_agreement": 1 - changed / n,
        "tolerance_points": tolerance,
        "calibration_images": 0,
        # counted in images, so that exactly the tolerance holds (2 of 400 is 0.5 points, not 0.5000000000000004)
        "passed": 100 * (correct["fp32"] - correct["int8"]) <= tolerance * n and 100 * changed <= tolerance * n,
    }


def quantize_checked(
    fp32: Path,
    out: Path,
    spec: ImageSpec,
    train: Split,
    val: Split,
    meta: dict,
    events: Events,
    tolerance: float = INT8_TOLERANCE,
) -> QuantCheck:
    """Quantize, check on val, and write the figures into the int8 file's metadata; a refusal in one line when it
    does not hold (the caller removes `out`)."""
    quantize(fp32, out, spec, train, events)
    _write_metadata(out, meta)  # quantize_static keeps none of it
    result = check(fp32, out, spec, val, events, tolerance)
    result["calibration_images"] = len(train)
    if not result["passed"]:
        raise CatdogError(
            f"int8 does not hold on {result['images']} val images: accuracy {result['accuracy_fp32']:.1%} -> "
            f"{result['accuracy_int8']:.1%} ({result['points_lost']:.2f} points lost), labels agree on "
            f"{result['label_agreement']:.1%}; tolerance {tolerance} points; nothing was written"
        )
    _write_metadata(out, {**meta, "quantized": result})
    return result


def _write_metadata(path: Path, meta: dict) -> None:
    """The ONNX file's metadata replaced by `meta`, one JSON value per key (as export writes it)."""
    import onnx

    model = onnx.load(str(path))
    set_onnx_metadata(model, meta)
    onnx.save_model(model, str(path))
