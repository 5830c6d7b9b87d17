"""gpu_check.sh's helpers: the machine as JSON, a small copy of a dataset for --smoke, and the summary.

python benchmarks/gpu_check.py preflight            # every module the steps import, or the missing ones named
python benchmarks/gpu_check.py env                  # the machine, versions, nvidia-smi: JSON on stdout
python benchmarks/gpu_check.py sample FILE          # nvidia-smi memory.used (MiB) 4x a second into FILE, until killed
python benchmarks/gpu_check.py subset SRC DST N     # at most N images per class and split of SRC, in DST
python benchmarks/gpu_check.py summary OUT          # OUT/*.json and OUT/steps.jsonl -> the key figures
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

NVIDIA_FIELDS = (
    "name",
    "driver_version",
    "memory.total",
    "power.limit",
    "clocks.max.sm",
    "temperature.gpu",
    "utilization.gpu",
    "memory.used",
)


def nvidia_smi() -> list[dict[str, str]] | None:
    """One dict per GPU from `nvidia-smi --query-gpu`, or None where there is no nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = subprocess.run(
        ["nvidia-smi", f"--query-gpu={','.join(NVIDIA_FIELDS)}", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [
        dict(zip(NVIDIA_FIELDS, (v.strip() for v in line.split(","))))
        for line in query.stdout.splitlines()
        if line.strip()
    ]


# what the steps import (module names); a bare GPU box with torch may lack any of the others
REQUIRED = ("torch", "torchvision", "typer", "click", "rich", "PIL", "typing_extensions", "numpy")
OPTIONAL = ("platformdirs", "timm")  # catdog falls back without platformdirs; timm only for timm: backbones


def preflight() -> list[str]:
    """The required modules that cannot be imported here (empty: every step can start)."""
    import importlib

    missing = []
    for name in REQUIRED:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def sample(path: Path, period: float = 0.25) -> None:
    """Lines of "unix_time MiB_used" (GPU 0), for each compare cell's peak memory in the summary."""
    with path.open("a") as f:
        while True:
            query = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if query.stdout.strip():
                f.write(f"{time.time():.3f} {query.stdout.split()[0]}\n")
                f.flush()
            time.sleep(period)


def cell_peaks(grid: Any, samples: Path) -> list[dict[str, Any]] | None:
    """Each catdog compare cell's peak nvidia-smi memory.used (MiB) between its start and end."""
    table = _pick(grid, "catdog", "table")
    if not isinstance(table, list) or not samples.is_file():
        return None
    points = []
    for line in samples.read_text().splitlines():
        try:
            t, mib = line.split()
            points.append((float(t), int(mib)))
        except ValueError:
            continue
    peaks = []
    for row in table:
        window = row.get("unix") or []
        inside = [mib for t, mib in points if len(window) == 2 and window[0] <= t <= window[1]]
        peaks.append({"cell": f"{row.get('backbone')}/{row.get('strategy')}", "peak_mib": max(inside, default=None)})
    return peaks


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def env() -> dict[str, Any]:
    import torch

    from catdog_cli.runtime.device import Precision, cpu_bf16_native

    cuda = torch.cuda.is_available()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in ("torch", "torchvision", "timm", "typer", "rich", "platformdirs")},
        "cores": len(os.sched_getaffinity(0)),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cuda": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_count": torch.cuda.device_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16_native": cpu_bf16_native(),
        "precision_auto": {
            "cpu": Precision(torch.device("cpu")).name,
            "cuda": Precision(torch.device("cuda")).name if cuda else None,
        },
        "nvidia_smi": nvidia_smi(),
    }


def subset(src: Path, dst: Path, per_class: int) -> dict[str, int]:
    """The first `per_class` images (by name) of every class folder of every split, and of unlabeled/."""
    counts: dict[str, int] = {}
    for split in sorted(p for p in src.iterdir() if p.is_dir()):
        folders = [split] if split.name == "unlabeled" else sorted(p for p in split.iterdir() if p.is_dir())
        for folder in folders:
            files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))[:per_class]
            target = dst / folder.relative_to(src)
            target.mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copy2(f, target / f.name)
            counts[str(folder.relative_to(src))] = len(files)
    return counts


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pick(doc: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def _train_figures(run: Any) -> dict[str, Any] | None:
    if not isinstance(run, dict) or "history" not in run:
        return None
    history = run["history"]
    return {
        "precision": run.get("precision"),
        "epochs": run.get("epochs"),
        "best_val_acc": run.get("best_val_acc"),
        "epoch_seconds": [round(h["seconds"], 2) for h in history],
        "img_per_s": [round(h["images_per_sec"], 1) for h in history],
    }


def summary(out: Path) -> dict[str, Any]:
    """The figures benchmarks/README.md asks for, from the steps' own JSON; a step that failed says so."""
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()]
    pipeline, grid = _load(out / "pipeline.json"), _load(out / "compare_grid.json")
    grid = grid or _load(out / "compare_grid.partial.json")  # cut short: catdog's half at least
    evaluations = {name: _load(out / f"{name}.json") for name in ("evaluate", "evaluate_compiled")}
    return {
        "env": _load(out / "env.json"),
        "steps": steps,
        "pipeline": None
        if pipeline is None
        else {
            "backbone": pipeline.get("backbone"),
            "tutorial_img_per_s": _pick(pipeline, "tutorial", "img_per_s"),
            "catdog": pipeline.get("catdog"),
            "speedup_finetune": pipeline.get("speedup_finetune"),
            "freeze_over_finetune": pipeline.get("freeze_over_finetune"),
            "predict": pipeline.get("predict"),
        },
        "compare_grid": None
        if grid is None
        else {
            "grid": grid.get("grid"),
            "catdog_wall_s": _pick(grid, "catdog", "wall_s"),
            "tutorial_wall_s": _pick(grid, "tutorial", "wall_s"),
            "speedup": grid.get("speedup"),
            "complete": "load_average_at_end" in grid,
            "nvidia_smi_peak_mib_per_cell": cell_peaks(grid, out / "gpu_memory.txt"),
        },
        "train": {
            name: _train_figures(_load(out / f"{name}.json"))
            for name in ("train", "train_compiled", "torchrun", "torchrun_gloo")
        },
        "evaluate": {
            name: None if ev is None else {k: ev.get(k) for k in ("precision", "accuracy", "seconds", "images_per_sec")}
            for name, ev in evaluations.items()
        },
    }


def main() -> None:
    command, *args = sys.argv[1:] or ["help"]
    if command == "preflight":
        missing = preflight()
        if missing:
            sys.exit(f"gpu_check: missing Python modules: {', '.join(missing)} (put their wheels in WHEELDIR)")
        print(json.dumps({"missing": []}))
    elif command == "sample":
        sample(Path(args[0]))
    elif command == "env":
        print(json.dumps(env(), indent=2))
    elif command == "subset":
        print(json.dumps(subset(Path(args[0]), Path(args[1]), int(args[2])), indent=2))
    elif command == "summary":
        print(json.dumps(summary(Path(args[0])), indent=2))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
