"""Runners: one interface over the ways catdog runs a trained model, so that predict and evaluate read them alike.

A checkpoint runs in PyTorch (`TorchRunner`); a file `catdog export` wrote runs in its own runtime, onnxruntime
(`OnnxRunner`) or torch.jit (`TorchScriptRunner`), and its metadata says its classes, input contract (resize,
crop, normalization) and temperature; a file without that metadata is refused in one line. Which runner a file
gets is fastpath.open_runner's choice.

Every runner takes catdog's decoded batches (uint8 crops at the model's resize and crop) and returns named
outputs: `logits` always, and whatever else the model computes under its own name. An exported file returns
calibrated probabilities p = softmax(z / T); its `logits` are T * log(p), the logits up to a constant per row,
which softmax, cross-entropy and calibration all ignore.
"""

from __future__ import annotations

import io
import json
import math
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from catdog_cli.core.defaults import STRATEGIES
from catdog_cli.core.records import Params, Throughput
from catdog_cli.data.dataset import Split
from catdog_cli.data.decode import ImageBatch
from catdog_cli.data.presets import Preset
from catdog_cli.data.sources import ThreadedSource
from catdog_cli.errors import CatdogError
from catdog_cli.inference import calibration, ood
from catdog_cli.inference.trained import TrainedModel, one_pass
from catdog_cli.models import checkpoints
from catdog_cli.models.transfer import count_params
from catdog_cli.runtime.device import Precision, configure_threads, resolve_device

LOGITS = "logits"
METADATA_FILE = "catdog.json"  # TorchScript: the metadata's name among the file's extra files
INPUT, OUTPUT, SCORE = "images", "probabilities", "unknown_score"  # an exported file's input and output names
NEEDED = ("classes", "preprocessing", "temperature")  # metadata without these is not usable
TINY = torch.finfo(torch.float32).tiny  # log(0) would be -inf: probabilities that underflowed count as this


def params_of(trained: TrainedModel) -> Params:
    """Parameters in all and those its strategy trains (freeze: the head alone)."""
    strategy = STRATEGIES.get(trained.checkpoint.get("strategy"))
    if strategy is not None and strategy.frozen:
        trained.base.freeze_features()
    total, trainable = count_params(trained.base)
    return {"total": total, "trainable": trainable}


class Runner(ABC):
    """A trained model ready to classify decoded batches, in whichever runtime runs it."""

    runtime: str  # torch, onnxruntime or torchscript
    path: Path  # the file the user gave
    record: dict[str, Any]  # the checkpoint's record, or an exported file's metadata
    preset: Preset  # how to decode for it (resize, crop) and, for PyTorch, normalize
    device: torch.device
    precision: str  # bf16, fp16 or fp32

    @property
    def classes(self) -> list[str]:
        return self.record["classes"]

    @property
    def backbone(self) -> str:
        return str(self.record.get("backbone", "?"))

    @property
    @abstractmethod
    def temperature(self) -> float: ...

    @abstractmethod
    def outputs(self, batch: ImageBatch) -> dict[str, torch.Tensor]:
        """`logits` (float32, before the temperature) and any other output the model has, for a batch."""

    @abstractmethod
    def params(self) -> Params: ...

    @abstractmethod
    def unknown_detector(self) -> dict[str, Any] | None:
        """The unknown-image detector (`ood.summary`: method, threshold, keep), whose score is the `unknown_score`
        output; None without one. Read from the record, so asking builds no model."""

    def trained(self) -> TrainedModel | None:
        """The PyTorch model behind this runner where there is one (Grad-CAM needs it); None for an exported file."""
        return None

    def one_pass(
        self,
        split: Split,
        batch_size: int | None,
        workers: int | None,
        on_skip: Callable[[Path, str], None] | None = None,
    ) -> ThreadedSource:
        return one_pass(split, self.preset, self.device, batch_size, workers, on_skip)


class TorchRunner(Runner):
    """A checkpoint in PyTorch. Its record is read at once, and once (evaluate needs it to find the data); the model
    is built from that record when first used, so that a checkpoint which then runs in onnxruntime never builds it."""

    runtime = "torch"
    onnx = "never"  # under fastpath: never, auto or always to onnxruntime through a cached export

    def __init__(
        self, path: Path, device: str, precision: str, tta: str | None = None, model: TrainedModel | None = None
    ):
        self.path, self.tta, self.requested = path, tta, precision
        self._given, self._device = model, device
        self.record = model.checkpoint if model is not None else checkpoints.load(path)
        self.device = model.device if model is not None else resolve_device(device)
        self.precision = Precision.for_inference(self.device, precision).name  # what TrainedModel computes in

    @cached_property
    def model(self) -> TrainedModel:
        # first used inside a pass's inference_mode: its tensors are built outside it (Grad-CAM needs autograd)
        with torch.inference_mode(False):
            return self._given or TrainedModel.from_checkpoint(self.record, self._device, self.requested, self.tta)

    @property
    def preset(self) -> Preset:  # type: ignore[override]  # test-time augmentation decodes at its own size
        return self.model.preset if self.tta else Preset.from_checkpoint(self.record)

    @property
    def temperature(self) -> float:
        return calibration.temperature_of(self.record)

    def outputs(self, batch: ImageBatch) -> dict[str, torch.Tensor]:
        scored = self.model.scored() if self.model.detector is not None else nullcontext()
        with torch.inference_mode(), self.model.precision.autocast(), scored as tap:
            found = {LOGITS: self.model.model(self.model.preset.model_input(batch)).float()}
        if tap is not None:
            found[SCORE] = tap.take_scores()
        return found

    def unknown_detector(self) -> dict[str, Any] | None:
        return ood.summary(self.record.get("ood"))

    def params(self) -> Params:
        return params_of(self.model)

    def trained(self) -> TrainedModel:
        return self.model


class ExportedRunner(Runner):
    """A file `catdog export` wrote: uint8 NHWC crops in, calibrated probabilities out, its contract in metadata."""

    precision = "fp32"
    device = torch.device("cpu")

    def __init__(self, path: Path, meta: dict[str, Any], behind: TorchRunner | None = None):
        """`behind`: the checkpoint's runner an export catdog cached was made from (its record; its model, built
        once, when asked for)."""
        self.path, self.meta, self.behind = path, meta, behind
        self.preset = _preset_of(path, meta)
        self.record = behind.record if behind is not None else meta
        output = meta.get("output")
        self.output = str(output.get("name", OUTPUT)) if isinstance(output, dict) else OUTPUT

    @property
    def temperature(self) -> float:
        return float(self.meta["temperature"])

    @abstractmethod
    def run(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The file's own outputs by name, for uint8 (N, C, C, 3) crops."""

    def outputs(self, batch: ImageBatch) -> dict[str, torch.Tensor]:
        found = self.run(batch.images.permute(0, 2, 3, 1).contiguous())
        probabilities = found.pop(self.output).float()
        return {LOGITS: self.temperature * probabilities.clamp_min(TINY).log(), **found}

    def params(self) -> Params:
        return self.meta.get("params") or {"total": self._count(), "trainable": 0}

    def unknown_detector(self) -> dict[str, Any] | None:
        return ood.summary(self.meta.get("unknown"))

    def trained(self) -> TrainedModel | None:
        """The model of the checkpoint behind an export catdog cached (Grad-CAM); None for a user's file."""
        return self.behind.model if self.behind is not None else None

    @abstractmethod
    def _count(self) -> int:
        """Parameters in the file (one exported before its metadata said how many)."""


class OnnxRunner(ExportedRunner):
    runtime = "onnxruntime"

    def __init__(self, path: Path, behind: TorchRunner | None = None):
        session = _onnx_session(path)
        meta = _parsed(path, session.get_modelmeta().custom_metadata_map)
        super().__init__(path, meta, behind)
        self.session = session
        self.names = [o.name for o in session.get_outputs()]
        self.input = session.get_inputs()[0].name
        if self.output not in self.names:
            raise CatdogError(f"{path} has no output named {self.output!r}, which its metadata promises; refusing it")
        if meta.get("quantized"):
            self.precision = "int8"

    def run(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        found = self.session.run(self.names, {self.input: images.numpy()})
        return {name: torch.from_numpy(value) for name, value in zip(self.names, found)}

    def _count(self) -> int:
        import onnx

        graph = onnx.load(str(self.path)).graph
        return sum(math.prod(t.dims) for t in graph.initializer)


class TorchScriptRunner(ExportedRunner):
    runtime = "torchscript"

    def __init__(self, path: Path):
        files = {METADATA_FILE: ""}
        try:
            with quiet_torchscript():
                self.module = torch.jit.load(
                    io.BytesIO(path.read_bytes()), map_location="cpu", _extra_files=files
                )  # any name
        except Exception as exc:  # torch says RuntimeError or worse for a damaged archive
            raise CatdogError(f"{path} is not a TorchScript file torch.jit can load ({first_line(exc)})") from None
        super().__init__(path, _parsed(path, {"": files[METADATA_FILE]} if files[METADATA_FILE] else {}))

    def run(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            found = self.module(images)
        found = tuple(found) if isinstance(found, (tuple, list)) else (found,)  # with a detector: and the score
        return dict(zip((self.output, SCORE), found))

    def _count(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


@contextmanager
def quiet_torchscript() -> Iterator[None]:
    """torch.jit warns, on every load and save, that TorchScript is deprecated."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _onnx_session(path: Path) -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise CatdogError(f"{path} is an ONNX file: running it needs onnxruntime (pip install onnxruntime)") from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers are not the user's business
    options.intra_op_num_threads = configure_threads()[0]  # the count torch uses, chosen against the load
    try:
        return onnxruntime.InferenceSession(path.read_bytes(), options, providers=["CPUExecutionProvider"])  # any name
    except Exception as exc:  # onnxruntime raises its own classes for a file that is not a model
        raise CatdogError(f"{path} is not an ONNX model onnxruntime can load ({first_line(exc)})") from None


def set_onnx_metadata(proto: Any, meta: dict[str, Any]) -> None:
    """An ONNX model's metadata replaced by `meta`: one entry per key, each a JSON value (what `_parsed` reads)."""
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)


def _parsed(path: Path, raw: dict[str, str]) -> dict[str, Any]:
    """An exported file's metadata from its raw entries (ONNX: one JSON value per key; TorchScript: one JSON
    document under the key ""), or a one-line refusal when it is not catdog's."""
    try:
        meta = json.loads(raw[""]) if "" in raw else {k: json.loads(v) for k, v in raw.items()}
    except (json.JSONDecodeError, TypeError):
        meta = {}
    missing = [k for k in NEEDED if k not in meta] if isinstance(meta, dict) else list(NEEDED)
    if missing:
        raise CatdogError(
            f"{path} carries no catdog metadata ({', '.join(missing)}: its classes, input contract and "
            "temperature); run files written by `catdog export`, or the checkpoint itself"
        )
    return meta


def _preset_of(path: Path, meta: dict[str, Any]) -> Preset:
    """The decode the file expects, from its metadata; odd values are refused in one line."""
    try:
        classes, temperature = meta["classes"], float(meta["temperature"])
        preset = Preset.from_metadata(meta["preprocessing"])
        good = (
            isinstance(classes, list)
            and len(classes) >= 2
            and all(isinstance(c, str) for c in classes)
            and math.isfinite(temperature)
            and temperature > 0
            and 0 < preset.image_size <= 4096
            and 0 < preset.resize <= 4096
            and len(preset.mean) == len(preset.std) == 3
        )
    except (KeyError, TypeError, ValueError):
        good = False
    if not good:
        raise CatdogError(f"{path} has damaged catdog metadata (classes, preprocessing or temperature); refusing it")
    return preset


@contextmanager
def throughput(runner: Runner, images: int) -> Iterator[Throughput]:
    """How a pass over `images` images ran: runtime, device, precision, the CPU threads (and why that many, as
    run.json records them), wall time (decode and compute), img/s."""
    threads, why = configure_threads()
    found: Throughput = {
        "runtime": runner.runtime,
        "device": str(runner.device),
        "precision": runner.precision,
        "threads": threads,
        "threads_why": why,
        "seconds": 0.0,
        "images_per_sec": 0.0,
    }
    start = time.perf_counter()
    yield found
    if runner.device.type == "cuda":
        torch.cuda.synchronize(runner.device)
    found["seconds"] = time.perf_counter() - start
    found["images_per_sec"] = images / found["seconds"] if found["seconds"] else 0.0
