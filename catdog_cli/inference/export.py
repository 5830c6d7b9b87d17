"""`catdog export`: a trained model as one file that runs without catdog (ONNX or TorchScript), proven to agree.

Exported models usually disagree with the framework they came from because the preprocessing is left for the
user to rewrite. Here the graph takes what an image library hands over: uint8 RGB in NHWC layout, (N, C, C, 3)
at the model's crop size C, any batch size N. Inside it: scale and normalize as the weights expect, the model,
the calibrated temperature, softmax; out come probabilities (N, classes). What stays outside is decoding, resizing
and cropping (the user's image library does it); the file's metadata spells that contract out step by step
(transparency, 16-bit grayscale, any aspect ratio), with the class names.

With an unknown-image detector in the checkpoint (inference/ood.py) the graph has a second output, `unknown_score`
(N,), computed inside it from the same features; the metadata gives its threshold (above it: neither class).

After writing, catdog proves parity: the exported file (onnxruntime for ONNX, torch.jit for TorchScript), fed crops
made from the original files by the documented steps, and catdog's own predict run on the same real images, on
the CPU in fp32, and the export fails, leaving no file, if any probability differs by more than the tolerance or
any label differs.
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

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from catdog_cli import __version__
from catdog_cli.core.config import EXPORT_FORMATS, check_export
from catdog_cli.core.defaults import INT8_TOLERANCE
from catdog_cli.core.events import Events
from catdog_cli.core.paths import publish_new, writing
from catdog_cli.core.records import ExportResult, Parity, QuantCheck
from catdog_cli.data.dataset import Dataset, Split, load_dataset
from catdog_cli.data.decode import ImageBatch, ImageError, ImageSpec
from catdog_cli.data.folders import collect_images
from catdog_cli.data.presets import Preset
from catdog_cli.errors import CatdogError
from catdog_cli.inference import ood
from catdog_cli.inference.quantize import CALIBRATION_IMAGES, quantize_checked
from catdog_cli.inference.runtimes import (
    INPUT,
    LOGITS,
    METADATA_FILE,
    OUTPUT,
    SCORE,
    ExportedRunner,
    OnnxRunner,
    TorchRunner,
    TorchScriptRunner,
    params_of,
    set_onnx_metadata,
)
from catdog_cli.inference.trained import TrainedModel
from catdog_cli.models.backbones import TransferModel

TOLERANCE = 1e-4  # largest |probability difference| allowed between the file and catdog (fp32 on the CPU)
PARITY_IMAGES = 32  # real images the parity check runs on


class Exportable(nn.Module):
    """uint8 NHWC RGB crops -> calibrated class probabilities (and the unknown score, with a detector): everything
    between the crop and the answer."""

    def __init__(self, model: TransferModel, preset: Preset, temperature: float, detector: ood.Detector | None = None):
        super().__init__()
        self.model, self.detector = model, detector
        # the same arithmetic as augment.normalize, so the file computes what catdog computes
        self.register_buffer("mean", torch.tensor(preset.mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(preset.std).view(1, 3, 1, 1) * 255)
        self.temperature = temperature

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = (images.permute(0, 3, 1, 2).float() - self.mean) / self.std
        features = self.model.features(x)  # TransferModel's forward, in two steps: the detector reads the features
        logits = self.model.head(features[0] if isinstance(features, tuple) else features).float()
        probabilities = (logits / self.temperature).softmax(1)
        if self.detector is None:
            return probabilities
        return probabilities, self.detector(features, logits)


DEEP_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # Pillow's 16-bit and 32-bit grayscale modes
TRANSPARENT = ("RGBA", "LA", "PA")  # and P with a transparent palette entry


def contract_steps(resize: int, crop: int) -> list[str]:
    """The preprocessing outside the graph, step by step, in Pillow's terms: exactly what catdog's eval decode does
    (data/decode.load_eval_image), for every image catdog accepts. `contract_crop` is these steps as code."""
    return [
        "open the file with Pillow; a JPEG is decoded by draft('RGB', (resize, resize)): at the smallest DCT scale "
        "that still covers resize",
        "apply the EXIF orientation (ImageOps.exif_transpose)",
        f"16-bit or float grayscale (modes {', '.join(DEEP_GRAY)}): stretch the image's own min..max linearly to "
        "0..255 (mode L); a flat image becomes 0",
        f"transparency (modes {', '.join(TRANSPARENT)}, or P with a transparent entry): alpha-composite on opaque "
        "white (Image.alpha_composite)",
        "convert to RGB",
        f"resize the whole image, bilinear (Pillow), so the shorter side is {resize} px and the longer "
        f"int({resize} * longer / shorter) px, whatever the aspect ratio (catdog accepts up to 100:1)",
        f"center-crop {crop}x{crop}, offsets round((side - {crop}) / 2)",
    ]


def contract_crop(path: Path, resize: int, crop: int) -> torch.Tensor:
    """uint8 (crop, crop, 3): `contract_steps` done with plain Pillow from the original file, as the README's snippet
    does, deliberately not through catdog's decoder: the parity check then proves the contract a user is given."""
    with Image.open(path) as opened:
        opened.draft("RGB", (resize, resize))
        im = ImageOps.exif_transpose(opened)
    if im.mode in DEEP_GRAY:
        lo, hi = im.getextrema()
        im = im.convert("F").point(lambda v: (v - lo) * (255.0 / (hi - lo) if hi > lo else 0.0)).convert("L")
    if im.mode in TRANSPARENT or (im.mode == "P" and "transparency" in im.info):
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im.convert("RGBA"))
    im = im.convert("RGB")
    im = im.resize(
        (max(resize, int(resize * im.width / im.height)), max(resize, int(resize * im.height / im.width))),
        Image.Resampling.BILINEAR,
    )
    x, y = round((im.width - crop) / 2), round((im.height - crop) / 2)
    return torch.from_numpy(np.asarray(im.crop((x, y, x + crop, y + crop))).copy())


def metadata(trained: TrainedModel, checkpoint: Path) -> dict[str, Any]:
    """What the file carries besides the graph: enough to use it right without catdog."""
    preset = trained.preset
    return {
        "classes": trained.classes,
        "input": {
            "name": INPUT,
            "layout": "NHWC",
            "dtype": "uint8",
            "channels": "RGB",
            "shape": ["batch", preset.image_size, preset.image_size, 3],
        },
        "output": {
            "name": OUTPUT,
            "shape": ["batch", len(trained.classes)],
            "meaning": "calibrated class probabilities, in the order of classes",
        },
        "preprocessing": {
            "resize": preset.resize,
            "crop": preset.image_size,
            "steps": contract_steps(preset.resize, preset.image_size),
            "in_graph": "x / 255, (x - mean) / std, softmax(logits / temperature)",
            "mean": list(preset.mean),
            "std": list(preset.std),
        },
        "temperature": trained.temperature,
        **_unknown_metadata(trained.detector),
        "backbone": trained.checkpoint["backbone"],
        "params": params_of(trained),
        "checkpoint": str(checkpoint),
        "catdog": __version__,
    }


def _unknown_metadata(detector: ood.Detector | None) -> dict[str, Any]:
    if detector is None:
        return {}
    return {
        "unknown": {
            "output": SCORE,
            "shape": ["batch"],
            "method": detector.method,
            "threshold": detector.threshold,
            "keep": detector.record.get("keep"),
            "meaning": "an image scoring above threshold looks like none of the classes (catdog predict's unknown)",
        }
    }


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
RUNNERS: dict[str, type[OnnxRunner] | type[TorchScriptRunner]] = {"onnx": OnnxRunner, "torchscript": TorchScriptRunner}


def probabilities(runner: ExportedRunner, images: torch.Tensor) -> torch.Tensor:
    """What an exported file answers for uint8 (N, C, C, 3) crops: calibrated class probabilities."""
    return runner.run(images)[runner.output]


def spread(paths: list[Path], k: int) -> list[Path]:
    """k paths spread evenly over the list (a folder's files come class by class: every class gets its share)."""
    if len(paths) <= k:
        return paths
    return [paths[i * len(paths) // k] for i in range(k)]


def parity_images(trained: TrainedModel, folder: Path | str | None, k: int = PARITY_IMAGES) -> tuple[list[Path], str]:
    """Up to k real images to prove parity on: the given folder's, else the model's own val split."""
    if folder is not None:
        return spread(collect_images([folder]), k), str(folder)
    dataset = own_dataset(trained, "to prove parity on: pass --parity-images DIR")
    split = "val" if "val" in dataset.splits else "all"
    return spread(dataset.split(split).paths, k), f"the {split} split of {dataset.root}"


def own_dataset(trained: TrainedModel, missing: str) -> Dataset:
    """The data the model was trained on, with its run's own split where it recorded one (its val images are real
    val images); `missing` ends the refusal when that data is not there."""
    ckpt = trained.checkpoint
    data = Path(ckpt.get("data", ""))
    if not ckpt.get("data") or not data.is_dir():
        raise CatdogError(
            f"the data the model was trained on ({ckpt.get('data') or 'not recorded'}) is not there {missing}"
        )
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    recorded = ckpt.get("split")  # the run's own split where it recorded one: its val images are real val images
    return load_dataset(
        data,
        config.get("val_split", 0.2),
        config.get("seed", 0),
        classes=trained.classes,
        recorded=recorded if isinstance(recorded, dict) else None,
    )


def check_parity(
    fmt: str,
    path: Path,
    trained: TrainedModel,
    checkpoint: Path,
    images: list[Path],
    source: str,
    events: Events,
    tolerance: float = TOLERANCE,
    batch_size: int = 8,
) -> Parity:
    """The file and catdog's PyTorch runner (what predict computes at fp32 on the CPU) on the same images: the
    largest probability difference, label agreement, and with a detector the largest difference of the unknown score
    (relative to the score, at least 1).

    The file gets crops made from the original files by the documented steps (`contract_crop`), not by catdog's own
    decoder; the runner gets catdog's eval decode of the same files. Batches of `batch_size` and a smaller last one
    (so a dynamic batch size is exercised too); unreadable images are left out.
    """
    spec: ImageSpec = trained.preset.eval_spec()
    split = Split(images, [0] * len(images))
    crops, readable = [], []
    for i in range(len(split)):
        with contextlib.suppress(ImageError):
            crops.append(spec.decode(split, i).image)
            readable.append(Path(images[i]))
    if not crops:
        raise CatdogError(f"no readable images in {source} to prove parity on")
    preset = trained.preset
    try:
        contract = [contract_crop(path, preset.resize, preset.image_size) for path in readable]
    except (OSError, ValueError, SyntaxError) as exc:  # catdog read it a moment ago
        raise CatdogError(f"an image changed while checking parity: {exc}") from None
    reference, runner = TorchRunner(checkpoint, "cpu", "fp32", model=trained), RUNNERS[fmt](path)
    events.task(f"parity ({fmt} vs catdog predict)", len(crops))
    expected, parts, want, scores = [], [], [], []
    for start in range(0, len(crops), batch_size):
        batch = torch.stack(crops[start : start + batch_size])
        unlabeled = ImageBatch(batch, torch.zeros(len(batch), dtype=torch.int64), torch.arange(len(batch)))
        ours = reference.outputs(unlabeled)
        expected.append((ours[LOGITS] / reference.temperature).softmax(1).double())
        found = runner.run(torch.stack(contract[start : start + batch_size]).contiguous())
        parts.append(found[runner.output].double())
        if SCORE in ours:
            if SCORE not in found:
                raise CatdogError("the exported model has no unknown score, yet the checkpoint has a detector")
            want.append(ours[SCORE].double())
            scores.append(found[SCORE].double())
        events.advance(len(batch))
    expected, got = torch.cat(expected), torch.cat(parts)
    diff = (got - expected).abs().max().item()
    agreement = (got.argmax(1) == expected.argmax(1)).double().mean().item()
    parity: Parity = {
        "images": len(crops),
        "source": source,
        "max_abs_diff": diff,
        "label_agreement": agreement,
        "tolerance": tolerance,
        "passed": diff <= tolerance and agreement == 1.0,
    }
    if want:
        wanted, score = torch.cat(want), torch.cat(scores)
        parity["unknown_score_diff"] = ((score - wanted).abs() / wanted.abs().clamp(min=1)).max().item()
        parity["passed"] = parity["passed"] and parity["unknown_score_diff"] <= tolerance
    return parity


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
