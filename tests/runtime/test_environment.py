"""runtime.environment: a half-broken install is named with its fix, by `catdog doctor` and by every command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import labeled_folder

from catdog_cli.runtime import environment

ROOT = Path(__file__).resolve().parents[2]
BROKEN = "operator torchvision::nms does not exist"


def _catdog(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """catdog in a fresh process where `import torchvision` fails as it does for a CPU torch beside a CUDA
    torchvision of another release (the real torch still imports)."""
    fake = tmp_path / "site" / "torchvision"
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "__init__.py").write_text(f"raise RuntimeError({BROKEN!r})\n")
    env = {**os.environ, "PYTHONPATH": f"{fake.parent}{os.pathsep}{ROOT}", "CATDOG_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "catdog_cli", *args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_a_broken_torchvision_ends_any_command_in_one_line_that_names_the_fix(tmp_path):
    data = labeled_folder(tmp_path / "data")
    done = _catdog(tmp_path, "train", "--data", str(data), "--weights", "none", "--device", "cpu")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: torch ") and BROKEN in line
    assert "pip install --force-reinstall torch torchvision --index-url" in line and "catdog doctor" in line


def test_doctor_names_the_broken_pair_and_exits_1(tmp_path):
    done = _catdog(tmp_path, "doctor")
    assert done.returncode == 1, done.stderr
    lines = [line.split() for line in done.stdout.splitlines()]
    assert ["x", "torchvision", "does", "not", "load", "(RuntimeError:", *BROKEN.split()[:-1], "exist)"] in lines
    assert "fix: reinstall both from one index: pip install --force-reinstall torch torchvision" in done.stdout
    assert "skipped      GPU, CPU, precision and weights need a working torch" in done.stdout
    assert done.stdout.rstrip().endswith("catdog cannot run here: fix torchvision (above)")


def test_an_exception_outside_an_import_of_the_stack_is_not_a_broken_install():
    try:
        raise RuntimeError(BROKEN)  # the same words, raised by catdog's own code: not an install problem
    except RuntimeError as exc:
        assert environment.stack_failure(exc) is None
    missing = ModuleNotFoundError("No module named 'timm'", name="timm")
    assert environment.stack_failure(missing).startswith("timm ")
    assert environment.stack_failure(ModuleNotFoundError("x", name="yaml")) is None


@pytest.mark.parametrize(
    ("torch_version", "vision_version", "works"),
    [("2.14.1+cpu", "0.29.1+cpu", True), ("2.14.1", "0.28.0", False), ("2.2.0", "0.17.2", True)],
)
def test_torch_and_torchvision_must_be_one_release(monkeypatch, torch_version, vision_version, works):
    import torch
    import torchvision

    monkeypatch.setattr(torch, "__version__", torch_version)
    monkeypatch.setattr(torchvision, "__version__", vision_version)
    [finding] = environment.torch_pair()
    assert finding.blocking is not works
    assert (finding.fix is None) is works


def test_a_cpu_torch_beside_a_cuda_torchvision_is_refused(monkeypatch):
    import torch
    import torchvision

    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torchvision.version, "cuda", "12080", raising=False)
    [finding] = environment.torch_pair()
    assert finding.blocking and "CPU" in finding.text and "CUDA 12.8" in finding.text
