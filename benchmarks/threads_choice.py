"""`catdog train` end to end at three thread settings, interleaved: OMP_NUM_THREADS=1, PyTorch's default (one
thread per core: `--threads` = the cores), and catdog's own choice (nothing set: the cores the load leaves free).

    python benchmarks/threads_choice.py --data path/to/hymenoptera_data [--rounds 3]

One process per run (threads are a process's setting), the settings in turn within each round, so the load
drifts over all three alike. Prints one JSON line per run (wall seconds, training img/s of the last epoch, the
threads run.json recorded, the load at its start) and a summary line of medians per setting.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def settings() -> dict[str, dict[str, str]]:
    cores = str(len(os.sched_getaffinity(0)))
    return {
        "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
        f"PyTorch default ({cores} threads)": {"CATDOG_THREADS": cores},
        "catdog's choice": {},
    }


def run(data: str, env: dict[str, str], args: argparse.Namespace, out: Path) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "CATDOG_THREADS")}
    command = [sys.executable, "-m", "catdog_cli", "train", "--data", data, "--backbone", args.backbone]
    command += ["--image-size", str(args.image_size), "--epochs", str(args.epochs), "--weights", "none"]
    command += ["--device", "cpu", "--out", str(out), "--json"]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(command, env={**clean, **env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    result = json.loads(done.stdout)
    return {
        "wall_s": round(wall, 1),
        "img_per_s": round(result["history"][-1]["images_per_sec"], 1),
        "threads": result["threads"],
        "threads_why": result["threads_why"],
        "load_at_start": round(load, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    found: dict[str, list[dict]] = {name: [] for name in settings()}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, env in settings().items():
                row = run(args.data, env, args, Path(tmp) / f"{r}-{len(found[name])}-{hash(name)}")
                found[name].append(row)
                print(json.dumps({"round": r, "setting": name, **row}), flush=True)
    print(
        json.dumps(
            {
                name: {
                    "median_wall_s": statistics.median(r["wall_s"] for r in rows),
                    "median_img_per_s": statistics.median(r["img_per_s"] for r in rows),
                }
                for name, rows in found.items()
            }
        )
    )


if __name__ == "__main__":
    main()
