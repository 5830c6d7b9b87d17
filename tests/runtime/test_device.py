"""runtime: the precision a model computes in (bf16 + channels_last on CPUs that do bf16 natively, fp32 elsewhere,
or what --precision asks), and a training run that records what it used."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from helpers import TINY, TINY_CLI, catdog, error_line, labeled_folder, ok_json

from catdog_cli.core.config import TrainConfig
from catdog_cli.core.defaults import THREADS_ENV
from catdog_cli.core.events import Events
from catdog_cli.errors import CatdogError
from catdog_cli.models.backbones import build_model
from catdog_cli.runtime import device as runtime
from catdog_cli.runtime.device import Precision
from catdog_cli.training.loop import fit

CPU = torch.device("cpu")
QUICK = {**TINY, "backbone": "squeezenet1_1"}  # the precision is under test, not the backbone: the smallest one


def _conv_weight(model: torch.nn.Module) -> torch.Tensor:
    return next(m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_the_cpu_is_bf16_where_the_hardware_does_bf16(monkeypatch, native):
    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: native)
    precision = Precision(CPU)
    assert precision.name == ("bf16" if native else "fp32")
    conv = torch.nn.Conv2d(3, 4, 3)
    with precision.autocast():
        out = conv(torch.randn(1, 3, 8, 8))
    assert out.dtype == (torch.bfloat16 if native else torch.float32)
    model = precision.prepare(build_model("resnet18", 2, "none"))
    assert _conv_weight(model).is_contiguous(memory_format=torch.channels_last)  # fastest at either precision
    assert not precision.scaler.is_enabled()  # bf16 needs no loss scaling


@pytest.mark.parametrize("native", [True, False])
def test_fp32_and_bf16_are_what_is_asked_whatever_the_cpu(monkeypatch, native):
    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: native)
    assert (Precision(CPU, "fp32").dtype, Precision(CPU, "bf16").dtype) == (None, torch.bfloat16)


def test_unknown_precision_and_bf16_on_a_gpu_without_it_are_refused(monkeypatch):
    with pytest.raises(CatdogError, match="unknown precision 'fp8'"):
        Precision(CPU, "fp8")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    with pytest.raises(CatdogError, match="this GPU has no bf16"):
        Precision(torch.device("cuda"), "bf16")
    assert Precision(torch.device("cuda"), "fp32").name == "fp32"


@pytest.mark.parametrize(
    "capabilities, chosen, expected",
    [
        ({0: (9, 0)}, "cuda:0", "bf16"),  # H100/H200
        ({0: (8, 0)}, "cuda", "bf16"),  # A100
        ({0: (7, 0)}, "cuda:0", "fp16"),  # V100: torch "supports" bf16 by emulation, slowly
        ({0: (7, 5)}, "cuda:0", "fp16"),  # T4
        ({0: (9, 0), 1: (7, 0)}, "cuda:1", "fp16"),  # the chosen GPU decides, not the current one (cuda:0)
        ({0: (7, 0), 1: (8, 6)}, "cuda:1", "bf16"),
    ],
)
def test_auto_on_cuda_is_bf16_by_the_chosen_gpus_compute_capability(monkeypatch, capabilities, chosen, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation counts: not asked
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)

    def capability(device=None):
        index = torch.device(device).index if device is not None else None
        return capabilities[0 if index is None else index]

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    precision = Precision(torch.device(chosen))
    assert precision.name == expected
    assert precision.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[expected]


def _scaled_step(scaler: torch.amp.GradScaler, loss_scale: float) -> tuple[bool, int, torch.Tensor]:
    """One Precision.step at fp16's loss scaling (a CPU GradScaler stands in for CUDA's): whether it stepped,
    the schedule's step count, and the weight after it."""
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    precision = Precision(CPU, "fp32")
    precision.scaler = scaler
    stepped = precision.step((weight * loss_scale).sum(), optimizer)
    if stepped:
        schedule.step()
    return stepped, schedule.last_epoch, weight.detach()


def test_fp16_the_schedule_does_not_step_when_the_scaler_skipped_the_update():
    skipped = _scaled_step(torch.amp.GradScaler("cpu", init_scale=2.0**16), float("inf"))  # gradients overflow
    assert skipped[0] is False and skipped[1] == 0 and torch.equal(skipped[2], torch.ones(2))
    done = _scaled_step(torch.amp.GradScaler("cpu", init_scale=2.0**16), 1.0)
    assert done[0] is True and done[1] == 1 and torch.allclose(done[2], torch.full((2,), 0.9))
    plain = _scaled_step(torch.amp.GradScaler("cpu", enabled=False), 1.0)  # fp32/bf16: no scaler, no host sync
    assert plain[0] is True and plain[1] == 1


def test_the_torch_floor_has_the_device_generic_grad_scaler():
    """torch.amp.GradScaler("cuda") (what Precision builds) came in torch 2.3: an older floor installs a torch
    that cannot train."""
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    floor = re.search(r'"torch>=(\d+)\.(\d+)', pyproject)
    assert floor is not None and (int(floor[1]), int(floor[2])) >= (2, 3)


def test_bf16_detection_asks_torch_then_the_kernel(monkeypatch, tmp_path):
    for probe, answer in (("_is_avx512_bf16_supported", False), ("_is_amx_tile_supported", True)):
        monkeypatch.setattr(torch.cpu, probe, lambda answer=answer: answer, raising=False)
    assert runtime.cpu_bf16_native()  # AMX alone is enough
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not runtime.cpu_bf16_native()
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    real_read = Path.read_text
    for flags, native in (("fpu avx512f avx512_bf16 sse", True), ("fpu avx512f avx2", False)):
        monkeypatch.setattr(
            Path,
            "read_text",
            lambda self, *a, flags=flags, **k: (
                f"flags\t\t: {flags}\n" if str(self) == "/proc/cpuinfo" else real_read(self, *a, **k)
            ),
        )
        assert runtime.cpu_bf16_native() == native


@pytest.mark.parametrize(
    "precision, strategy, augment",
    [("bf16", "finetune", True), ("bf16", "freeze", False), ("fp32", "finetune", True)],
    ids=["bf16-finetune", "bf16-freeze-cached-features", "fp32"],
)
def test_a_run_trains_at_the_precision_asked_and_records_it(tmp_path, precision, strategy, augment):
    data = labeled_folder(tmp_path / "data", per_class=6)
    config = TrainConfig(
        str(data), strategy=strategy, augment=augment, epochs=1, weights="none", precision=precision, **QUICK
    )
    result = fit(config, tmp_path / "run", Events())
    assert result["precision"] == precision and result["config"]["precision"] == precision
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]) for h in result["history"])


def test_precision_and_threads_reach_train_evaluate_and_predict(tmp_path, monkeypatch):
    data = labeled_folder(tmp_path / "data", per_class=6)
    monkeypatch.setattr(runtime, "_THREADS", None)  # this process chose before: choose again, as a new one would
    monkeypatch.setenv(THREADS_ENV, "7")  # restored after the test: --threads below sets it for the process
    run = ok_json(
        catdog(
            "--threads",
            "1",
            "train",
            "--data",
            data,
            "--epochs",
            "1",
            *TINY_CLI,
            "--batch-size",
            "4",
            "--precision",
            "fp32",
            "--out",
            tmp_path / "run",
            "--json",
        )
    )
    assert run["precision"] == "fp32"
    assert (run["threads"], run["threads_why"]) == (1, "--threads") and torch.get_num_threads() == 1
    model = tmp_path / "run" / "best.pt"
    evaluated = ok_json(catdog("evaluate", model, "--device", "cpu", "--precision", "bf16", "--json"))
    assert evaluated["precision"] == "bf16" and evaluated["images_per_sec"] > 0
    predicted = ok_json(catdog("predict", model, data / "cat", "--device", "cpu", "--precision", "bf16", "--json"))
    assert predicted["precision"] == "bf16" and len(predicted["predictions"]) == 6
    assert error_line(catdog("predict", model, data, "--precision", "half")) == (
        "error: unknown precision 'half'; use auto, fp32, bf16"
    )


@pytest.mark.parametrize("native", [True, False])
def test_inference_at_auto_is_fp32_as_the_exported_file_is(monkeypatch, native):
    """predict's sure/unsure decision at its default is the exported file's: both compute in fp32 (a bf16
    confidence of 90.4 % was 89.9 % in the file, on either side of --min-confidence 0.9)."""
    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: native)
    assert Precision.for_inference(CPU).name == "fp32"
    assert Precision.for_inference(CPU, "bf16").name == "bf16"  # asked for: its speed, its rounding
    assert Precision(CPU).name == ("bf16" if native else "fp32")  # training keeps bf16 where it is native
