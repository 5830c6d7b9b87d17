"""What `--log mlflow --log tensorboard` costs a train run: the time spent inside the trackers (timed around
each of their calls, first use of the MLflow store included) against the same run without them, in one process.

    python benchmarks/tracking_overhead.py [--epochs 3] [--images 64]

Synthetic two-class images, squeezenet1_1 from random init at 32 px on the CPU: a short run, so that the
trackers' share is as large as it gets. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import labeled_folder

from catdog_cli.core.config import TrainConfig
from catdog_cli.core.events import Events
from catdog_cli.tracking.base import follow
from catdog_cli.training.loop import fit

BEATS = ("begin", "epoch", "cell", "cell_done", "end")


def timed(tracker: object, spent: dict[str, float]) -> None:
    """Wrap each of a tracker's beats so that the seconds spent in it add up in spent[tracker name]."""
    for beat in BEATS:
        call = getattr(tracker, beat)

        def wrapper(*args, _call=call, **kwargs):
            start = time.perf_counter()
            try:
                return _call(*args, **kwargs)
            finally:
                spent[tracker.name] += time.perf_counter() - start

        setattr(tracker, beat, wrapper)


def run(data: Path, out: Path, epochs: int, trackers: list[str]) -> dict:
    config = TrainConfig(
        str(data), backbone="squeezenet1_1", weights="none", image_size=32, device="cpu", epochs=epochs, batch_size=8
    )
    spent = dict.fromkeys(trackers, 0.0)
    start = time.perf_counter()
    with follow(trackers, "train", Events()) as events:
        for tracker in events.trackers:
            timed(tracker, spent)
        result = fit(config, out, events)
        events.finish(result)
    return {"wall_seconds": time.perf_counter() - start, "tracker_seconds": spent, "epochs": result["epochs"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=64, help="per class")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = labeled_folder(Path(tmp) / "data", per_class=args.images)
        runs = Path(tmp) / "runs"
        found = {
            "baseline": run(data, runs / "plain", args.epochs, []),
            "first": run(data, runs / "tracked", args.epochs, ["mlflow", "tensorboard"]),  # makes the store
            "again": run(data, runs / "tracked2", args.epochs, ["mlflow", "tensorboard"]),
        }
    print(json.dumps(found, indent=2))


if __name__ == "__main__":
    main()
