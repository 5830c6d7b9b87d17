"""benchmarks/gpu_check.sh and its helpers: the script parses and refuses bad usage; the summary reads whatever
steps finished (the full --smoke run takes minutes: benchmarks/README.md has the command)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_image

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
_spec = importlib.util.spec_from_file_location("gpu_check", BENCHMARKS / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is absent")


@needs_bash
def test_gpu_check_script_parses_and_explains_its_usage(tmp_path):
    assert subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu_check.sh")]).returncode == 0
    usage = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), "--smoke", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 2 and "WHEELDIR ARCHIVE OUTDIR" in usage.stderr and "--smoke" in usage.stderr
    assert "--make-wheels WHEELDIR" in usage.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_subset_keeps_the_first_images_of_every_class_and_split(tmp_path):
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            for i in range(4):
                make_image(tmp_path / "src" / split / cls / f"{i}.png", (200, 30, 30))
    for i in range(3):
        make_image(tmp_path / "src" / "unlabeled" / f"{i}.jpg", (30, 30, 200))
    counts = gpu_check.subset(tmp_path / "src", tmp_path / "dst", 2)
    assert counts == {"train/cat": 2, "train/dog": 2, "unlabeled": 2, "val/cat": 2, "val/dog": 2}
    assert sorted(p.name for p in (tmp_path / "dst" / "val" / "dog").iterdir()) == ["0.png", "1.png"]


def test_summary_reports_steps_that_failed_and_a_grid_cut_short(tmp_path):
    steps = [
        {"step": "pipeline", "rc": 1, "seconds": 3, "limit_s": 100, "status": "failed"},
        {"step": "compare_grid", "rc": 124, "seconds": 200, "limit_s": 200, "status": "timed out"},
    ]
    (tmp_path / "steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    (tmp_path / "pipeline.json").write_text("")  # the failed step printed nothing
    (tmp_path / "compare_grid.json").write_text("")
    (tmp_path / "compare_grid.partial.json").write_text(json.dumps({"grid": {"epochs": 5}, "catdog": {"wall_s": 41.5}}))
    (tmp_path / "train.json").write_text(
        json.dumps(
            {
                "precision": "bf16",
                "epochs": 1,
                "best_val_acc": 0.9,
                "history": [{"seconds": 2.0, "images_per_sec": 800.0}],
            }
        )
    )
    found = gpu_check.summary(tmp_path)
    assert [s["status"] for s in found["steps"]] == ["failed", "timed out"]
    assert found["pipeline"] is None
    assert found["compare_grid"] == {
        "grid": {"epochs": 5},
        "catdog_wall_s": 41.5,
        "tutorial_wall_s": None,
        "speedup": None,
        "complete": False,
        "nvidia_smi_peak_mib_per_cell": None,
    }
    assert found["train"]["train"]["img_per_s"] == [800.0] and found["train"]["train_compiled"] is None


def test_preflight_names_each_missing_module_and_stops(tmp_path):
    """A bare GPU box with torch alone: the script stops at once, naming what WHEELDIR must add."""
    shim = tmp_path / "shim"
    shim.mkdir()
    for name in ("rich", "typer"):
        (shim / f"{name}.py").write_text("raise ImportError('absent')\n")
    env = {"PYTHONPATH": str(shim), "PATH": os.environ.get("PATH", "")}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_check.py"), "preflight"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "gpu_check: missing Python modules: typer, rich (put their wheels in WHEELDIR)"
    assert gpu_check.preflight() == []  # this machine has them all


def test_each_compare_cells_peak_gpu_memory_comes_from_the_samples_inside_it(tmp_path):
    samples = tmp_path / "gpu_memory.txt"
    samples.write_text("9.5 100\n10.0 500\n11.0 900\n12.0 700\n13.0 300\nbroken line\n14.0 2000\n")
    grid = {
        "catdog": {
            "table": [
                {"backbone": "resnet34", "strategy": "finetune", "unix": [10.0, 11.5]},
                {"backbone": "resnet34", "strategy": "freeze", "unix": [11.5, 13.0]},
                {"backbone": "googlenet", "strategy": "freeze", "status": "failed"},
            ]
        }
    }
    assert gpu_check.cell_peaks(grid, samples) == [
        {"cell": "resnet34/finetune", "peak_mib": 900},
        {"cell": "resnet34/freeze", "peak_mib": 700},
        {"cell": "googlenet/freeze", "peak_mib": None},
    ]
    assert gpu_check.cell_peaks(grid, tmp_path / "none.txt") is None
