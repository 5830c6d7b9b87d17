"""`catdog lr-find`: the learning-rate range test (Smith 2017; fastai's lr_find), once per strategy.

From the starting weights, each step multiplies the learning rate by the same factor (1e-7 to 10 over 100
steps by default) while the loss is recorded; the test stops once the loss has clearly blown up. The loss falls
where the rate starts to teach the model something and rises again where it is too large: the suggestion is
halfway down the longest stretch over which the smoothed loss keeps falling (fastai's "valley"). With
strategies that train the backbone slower (discriminative, freeze-unfreeze), every group is scaled together and
the rate named is the head's, as `--lr` takes it. Nothing is saved but the curves: each strategy starts again
from the same weights.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch

from catdog_cli.core.config import TrainConfig, check_lr_find
from catdog_cli.core.defaults import LR_FIND_MIN_STEPS
from catdog_cli.core.events import Events
from catdog_cli.core.files import atomic_write_text
from catdog_cli.core.paths import run_folder
from catdog_cli.core.records import LrCurve, LrFindResult, RunSummary, to_json
from catdog_cli.core.validate import Checked
from catdog_cli.data.dataset import load_dataset
from catdog_cli.data.decode import ImageBatch
from catdog_cli.data.sources import BatchSource, DecodeCache
from catdog_cli.models import checkpoints, warm_start
from catdog_cli.reporting.lr_find_report import write_lr_find_report
from catdog_cli.runtime.device import resolve_device
from catdog_cli.training.loop import train_step
from catdog_cli.training.setup import Run, start_run

START_LR, END_LR, STEPS = 1e-7, 10.0, 100
BETA = 0.9  # the running loss that stops a blown-up test: short memory, so it reacts within a few steps
BLOWN_UP = 4.0  # stop when the running loss is this many times its minimum
# the suggestion reads a centred moving average over 2 * WINDOW + 1 steps: smooth, and not late
WINDOW = (LR_FIND_MIN_STEPS - 3) // 2


def endless(source: BatchSource) -> Iterator[ImageBatch]:
    """Batches epoch after epoch, each epoch in its own order (a small dataset has fewer than 100 steps)."""
    epoch = 0
    while True:
        source.set_epoch(epoch)
        yield from source
        epoch += 1


def centred_average(values: list[float], window: int = WINDOW) -> list[float]:
    return [sum(part) / len(part) for part in (values[max(0, i - window) : i + window + 1] for i in range(len(values)))]


def suggest(lrs: list[float], losses: list[float]) -> float | None:
    """fastai's "valley" on the smoothed loss: the longest stretch of steps over which it keeps falling (its
    longest decreasing subsequence), and the rate halfway down it; None when the loss never fell. On real data
    (benchmarks/README.md) it landed nearer the measured best rates than the steepest point of the descent."""
    smooth = centred_average(losses)
    longest = [1] * len(smooth)  # longest decreasing run of steps ending at each step
    for i in range(1, len(smooth)):
        longest[i] = 1 + max((longest[j] for j in range(i) if smooth[j] > smooth[i]), default=0)
    end = max(range(len(smooth)), key=longest.__getitem__)
    if longest[end] < 3:
        return None
    return lrs[end - longest[end] + longest[end] // 2]


def range_test(
    run: Run, events: Events, start: float = START_LR, end: float = END_LR, steps: int = STEPS
) -> tuple[list[float], list[float], str]:
    """(the head's lr at each step, the loss of that step, why it stopped). The run's groups are at their
    relative rates with the head's at 1: the schedule gives each step's multiple."""
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(
        run.optimizer, lambda i: start * (end / start) ** (i / max(1, steps - 1))
    )
    generator = torch.Generator(device=run.device).manual_seed(run.config.seed)
    torch.manual_seed(run.config.seed)  # dropout
    run.model.train()
    lrs: list[float] = []
    losses: list[float] = []
    running, lowest = 0.0, math.inf
    events.task(f"lr-find {run.config.strategy}", steps)
    for step, batch in zip(range(steps), endless(run.sources.train)):
        lrs.append(run.optimizer.param_groups[-1]["lr"])
        loss, _ = train_step(run, batch, generator)
        losses.append(loss.item())  # a sync per step: the test must see each loss to stop in time
        events.advance(1)
        running = BETA * running + (1 - BETA) * losses[-1]
        debiased = running / (1 - BETA ** (step + 1))
        if not math.isfinite(debiased) or (step > WINDOW and debiased > BLOWN_UP * lowest):
            return lrs, losses, "the loss blew up"
        lowest = min(lowest, debiased)
    return lrs, losses, f"all {len(lrs)} steps"


class RangeTestEvents(Events):
    """What start_run tells, passed on, but its summary told once as the range test's: every strategy, the lr
    range and steps (a strategy's run is set up at lr 1 for one epoch, which is no setting of the test's)."""

    def __init__(self, events: Events, strategies: list[str], lr_range: tuple[float, float, int]):
        self.events, self.strategies, self.lr_range, self.told = events, strategies, lr_range, False

    def summary(self, summary: RunSummary) -> None:
        if not self.told:
            self.told = True
            self.events.summary(
                {**summary, "kind": "lr-find", "strategies": self.strategies, "lr_range": self.lr_range}
            )

    def task(self, description: str, total: int, batch: int = 1) -> None:
        self.events.task(description, total, batch)

    def advance(self, n: int = 1, **info: float) -> None:
        self.events.advance(n, **info)

    def note(self, text: str) -> None:
        self.events.note(text)

    def skip(self, path: Path, reason: str) -> None:
        self.events.skip(path, reason)


def find_lr(
    config: TrainConfig | Checked[TrainConfig],
    strategies: list[str],
    out: Path | str | None = None,
    events: Events | None = None,
    start: float = START_LR,
    end: float = END_LR,
    steps: int = STEPS,
    name: str | None = None,
) -> LrFindResult:
    """The range test for each strategy from the same starting weights; the curves and a suggested --lr each,
    saved as OUT/lr_find.json and OUT/lr_find.html (a new folder, runs/lr-findN by default, runs/lr-find/NAME
    with a `name`). `config` is checked here with the other arguments, unless it comes checked with them
    (`check_lr_find`: the CLI checks before torch loads)."""
    events = events or Events()
    checked = config if isinstance(config, Checked) else check_lr_find(config, strategies, start, end, steps)
    config = checked.given
    warm_start.check_warm_start(config.weights, config.backbone)
    with run_folder(out, "lr-find", name=name) as folder:  # claimed before any work, as train's
        dataset = load_dataset(config.data, config.val_split, config.seed, root=checked.data)
        device = resolve_device(config.device)
        model = warm_start.initial_model(config.backbone, dataset.classes, config.weights, device, config.seed, events)
        cache, curves = DecodeCache(), []
        told = RangeTestEvents(events, strategies, (start, end, steps))
        for strategy in strategies:
            cell = replace(config, strategy=strategy, lr=1.0, epochs=1, ema=False, patience=None)
            run = start_run(cell, dataset, told, cache, copy.deepcopy(model))
            curves.append(_curve(run, events, start, end, steps))
        settings = {
            k: getattr(run.config, k)
            for k in ("data", "backbone", "weights", "batch_size", "image_size", "augment", "lr_ratio", "seed")
        }  # as the runs resolved them
        result: LrFindResult = {
            "kind": "lr_find",
            "config": {**settings, "start_lr": start, "end_lr": end, "steps": steps},
            "classes": dataset.classes,
            "device": str(device),
            "versions": checkpoints.versions(),
            "curves": curves,
            "out": str(folder),
            "report": str(folder / "lr_find.html"),
        }
        write_lr_find_report(result, folder / "lr_find.html")
        atomic_write_text(folder / "lr_find.json", to_json(result))
    return result


def _curve(run: Run, events: Events, start: float, end: float, steps: int) -> LrCurve:
    lrs, losses, ended = range_test(run, events, start, end, steps)
    return {
        "strategy": run.config.strategy,
        "lrs": lrs,
        "losses": losses,
        "smoothed": centred_average(losses),
        "suggested_lr": suggest(lrs, losses),
        "min_loss_lr": lrs[min(range(len(losses)), key=losses.__getitem__)],
        "lr_ratio": run.config.lr_ratio,
        "ended": ended,
    }
