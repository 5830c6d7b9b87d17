"""The training loop, top to bottom: `train_step`, `train_one_epoch`, `run_epoch` (validation, unfreezing),
`train_loop` (best weights, early stopping, checkpoints) and `fit`, the entry point.
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack
from pathlib import Path

import torch

from catdog_cli.core.config import TrainConfig
from catdog_cli.core.defaults import STRATEGIES
from catdog_cli.core.events import Events
from catdog_cli.core.paths import run_folder
from catdog_cli.core.records import EpochRecord, TrainResult
from catdog_cli.core.validate import Checked
from catdog_cli.data.dataset import load_dataset
from catdog_cli.data.decode import ImageBatch
from catdog_cli.data.sources import DecodeCache
from catdog_cli.errors import CatdogError
from catdog_cli.inference.evaluate import (
    EvalOutput,
    evaluate,
)
from catdog_cli.models import checkpoints
from catdog_cli.models.transfer import TransferModel
from catdog_cli.runtime import distributed
from catdog_cli.runtime.signals import StopRequest
from catdog_cli.training.finish import final_eval, write_metrics_csv
from catdog_cli.training.setup import Run, TrainState, start_run, wrap


def _stop_if_diverged(loss: float, what: str, run: Run) -> None:
    """A loss that is not finite means the weights are lost (too high an --lr, bad data): stop now, before such
    weights are saved or chosen as best (a NaN model still "predicts" class 0 and can even score). Under torchrun
    every rank stops together, none waits for a rank that left."""
    here = not math.isfinite(loss)
    if distributed.any_rank(here, run.device, run.world):
        value = loss if here else "not finite on another rank"
        raise CatdogError(
            f"training diverged: the {what} loss became {value} in epoch {run.state.epoch + 1}; "
            "stopped without saving that epoch (try a lower --lr)"
        )


def train_step(run: Run, batch: ImageBatch, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch: its mean loss and how many images it got right (device tensors, no sync)."""
    x, target, labels = run.preprocess(batch, generator), batch.labels, batch.labels
    if run.mixing is not None:  # MixUp/CutMix: pixels and labels mixed with the same weight
        mixed = run.mixing(x, batch.labels, generator)
        x, target, labels = mixed.images, mixed.targets, mixed.labels
    with run.precision.autocast():
        logits = run.forward(x)
        loss = run.criterion(logits.float(), target)
    if run.precision.step(loss, run.optimizer):  # fp16: no schedule step when the scaler skipped the update
        run.scheduler.step()
    if run.ema is not None:
        run.ema.update()
    return loss.detach(), (logits.argmax(1) == labels).sum()


def train_one_epoch(run: Run, events: Events, stop: StopRequest, generator: torch.Generator) -> dict[str, float] | None:
    """One pass over train; None if a stop was requested (the run's state then says where it stopped)."""
    epoch = run.state.epoch
    run.model.train()
    # shuffle, augmentation and dropout depend on (seed, epoch, rank) only: a resumed run or a compare cell draws
    # the same numbers whatever ran before it. Dropout can only use torch's global generator: seed that too.
    epoch_seed = run.config.seed * 1_000_003 + epoch * 1_009 + run.world.rank
    run.sources.train.set_epoch(epoch)
    generator.manual_seed(epoch_seed)
    torch.manual_seed(epoch_seed + 1)
    loss_sum = torch.zeros((), device=run.device)
    correct = torch.zeros((), device=run.device, dtype=torch.int64)
    seen, compiled = 0, (0.0, 0)
    events.task(f"epoch {epoch + 1}/{run.config.epochs}", run.steps, batch=run.config.batch_size)
    for i, batch in zip(range(run.steps), run.sources.train):
        if i < run.state.step:  # resuming inside an epoch: these steps were already taken
            events.advance(1)
            continue
        compiles = run.config.compile and not getattr(run.forward, "catdog_compiled", False)
        started = time.perf_counter()
        loss, right = train_step(run, batch, generator)
        if compiles:  # this step compiled the model: timed apart (to its end), not counted in the epoch's img/s
            loss.item()
            compiled = (time.perf_counter() - started, len(batch) * run.world.size)
            run.forward.catdog_compiled = True  # a new wrap (unfreezing) compiles again
            events.note(f"--compile: the first step compiled in {compiled[0]:.1f}s (not counted in img/s)")
        loss_sum += loss * len(batch)
        correct += right
        seen += len(batch)
        run.state.step = i + 1
        sync = (i + 1) % 25 == 0  # a host sync now and then, for the live numbers and to stop a diverged run
        if sync:
            so_far = loss_sum.item()
            _stop_if_diverged(so_far, "training", run)
            events.advance(1, loss=so_far / seen, acc=correct.item() / seen)
        else:
            events.advance(1)
        # every rank stops after the same step: under torchrun the ranks agree at that periodic sync (a collective
        # and a host sync every step would stall the GPU), alone the flag is read at once
        if (sync or not run.world.distributed) and distributed.any_rank(stop.requested, run.device, run.world):
            stop.requested = True
            _stop_if_diverged(loss_sum.item(), "training", run)  # last.pt is saved next: never diverged weights
            return None
    run.state.step = 0
    totals = distributed.all_sum(
        torch.stack([loss_sum.double(), correct.double(), torch.tensor(seen, dtype=torch.float64, device=run.device)]),
        run.world,
    )
    _stop_if_diverged(totals[0].item(), "training", run)
    n = max(1.0, totals[2].item())
    return {
        "train_loss": totals[0].item() / n,
        "train_acc": totals[1].item() / n,
        "images": int(totals[2].item()),
        "compile_seconds": compiled[0],
        "compile_images": compiled[1],
    }


def validate(run: Run, events: Events, model: TransferModel | None = None, name: str = "val") -> EvalOutput:
    """`model` on val: the trained weights, or others of the same model (the EMA's)."""
    model = model or run.model
    distributed.sync_buffers(model, run.world)  # all ranks evaluate and end with rank 0's BatchNorm statistics
    events.task(f"{name} {run.state.epoch + 1}/{run.config.epochs}", len(run.sources.splits["val"]))
    net, preset = run.evaluable(model)
    return evaluate(net, run.sources.val, preset, run.precision, len(run.dataset.classes), events, run.world)


def unfreeze(run: Run, events: Events) -> None:
    """freeze-unfreeze after its frozen epochs: the whole model trains from here (DDP and --compile see the new
    trainable parameters: the model is wrapped again)."""
    run.model.unfreeze_features()
    run.forward = wrap(run.model, run.config, run.device, run.world)
    if run.ema is not None:
        run.ema.track(run.model)
    rates = ", ".join(f"{g['name']} {g['initial_lr']:.2g}" for g in run.optimizer.param_groups)
    events.note(f"epoch {run.state.epoch + 1}: backbone unfrozen, every layer trains (lr {rates})")


def run_epoch(run: Run, events: Events, stop: StopRequest, generator: torch.Generator) -> EpochRecord | None:
    """Train one epoch, then validate; the epoch's record (also appended to the history), or None if stopped.

    Training and validation are timed apart: img/s is the training images over the training time."""
    thaw = STRATEGIES[run.config.strategy].unfreeze_epoch(run.config.freeze_epochs)
    if thaw is not None and run.state.epoch >= thaw and run.model.frozen:
        unfreeze(run, events)
    start = time.perf_counter()
    train = train_one_epoch(run, events, stop, generator)
    if train is None:
        return None
    seconds = time.perf_counter() - start
    val = validate(run, events)
    _stop_if_diverged(val.loss, "val", run)  # the epoch's last step can break the weights too
    record: EpochRecord = {
        "epoch": run.state.epoch + 1,
        "train_loss": train["train_loss"],
        "train_acc": train["train_acc"],
        "val_loss": val.loss,
        "val_acc": val.accuracy,
        "lr": run.optimizer.param_groups[-1]["lr"],
        "seconds": seconds,
        "images_per_sec": (train["images"] - train["compile_images"]) / max(seconds - train["compile_seconds"], 1e-9),
    }
    if run.ema is not None:
        ema = validate(run, events, run.ema.model, "val (EMA)")
        record |= {"ema_val_loss": ema.loss, "ema_val_acc": ema.accuracy}
    record["val_seconds"] = time.perf_counter() - start - seconds
    run.state.epoch += 1
    run.state.history.append(record)
    return record


def better(acc: float, loss: float, best_acc: float, best_loss: float) -> bool:
    """Higher val accuracy, or the same with a lower val loss."""
    return acc > best_acc or (acc == best_acc and loss < best_loss)


def update_best(run: Run) -> TransferModel | None:
    """After an epoch: the weights that beat the best so far (the trained ones, or the EMA's when they did
    better still), with the state updated; None when neither did."""
    record, state = run.state.history[-1], run.state
    acc, loss, model = record["val_acc"], record["val_loss"], run.model
    if run.ema is not None and better(record["ema_val_acc"], record["ema_val_loss"], acc, loss):
        acc, loss, model = record["ema_val_acc"], record["ema_val_loss"], run.ema.model
    if not better(acc, loss, state.best_val_acc, state.best_val_loss):
        return None
    state.best_val_acc, state.best_val_loss, state.best_epoch = acc, loss, state.epoch
    state.best_is_ema = model is not run.model
    return model


def early_stop(state: TrainState, patience: int | None) -> str:
    """Why the run ends now (--patience epochs without a better val score), or "" to go on."""
    if patience is None or state.epoch - state.best_epoch < patience:
        return ""
    return (
        f"early stopping: no better val accuracy (or val loss at the same accuracy) in the {patience} "
        f"epoch(s) after epoch {state.best_epoch}"
    )


def keep_checkpoints(
    run: Run, out: Path, writes: bool, improved: TransferModel | None
) -> dict[str, torch.Tensor] | None:
    """After an epoch: best.pt from the `improved` weights if any (returned, kept in memory too), last.pt and
    metrics.csv always. Under torchrun rank 0 alone writes."""
    best = None
    first = not (out / "last.pt").exists()
    try:
        if improved is not None:
            best = {k: v.detach().clone() for k, v in improved.state_dict().items()}
            if writes:
                run.save(out / "best.pt", with_optimizer=False, model=improved)
        if writes:
            run.save(out / "last.pt", with_optimizer=True)
    except CatdogError as exc:  # a full disk: the folder stays resumable, or before any last.pt, as if never run
        if first:
            (out / "best.pt").unlink(missing_ok=True)
        then = (
            "nothing to resume yet: free some space and start the run again"
            if first
            else f"the last complete epoch is saved: free some space, then `catdog train --resume {out}`"
        )
        raise CatdogError(f"{exc}; {then}") from None
    if run.world.main:
        write_metrics_csv(out / "metrics.csv", run.state.history)
    return best


def train_loop(
    run: Run, out: Path, events: Events, save_checkpoints: bool = True, final_splits: tuple[str, ...] = ("val", "test")
) -> TrainResult:
    """Epochs until done or stopped. The best weights are also kept in memory, for the final evaluation on
    `final_splits` and for compare, which writes no per-cell checkpoints and needs only the test split."""
    writes = save_checkpoints and run.world.main
    best_state = None
    generator = torch.Generator(device=run.device)
    stop = StopRequest()
    with stop.installed():
        while (
            run.state.epoch < run.config.epochs
            and not run.state.ended
            and not distributed.any_rank(stop.requested, run.device, run.world)
        ):
            record = run_epoch(run, events, stop, generator)
            if record is None:
                break
            improved = update_best(run)
            run.state.ended = early_stop(run.state, run.config.patience)
            best_state = keep_checkpoints(run, out, writes, improved) or best_state
            events.epoch(record)
            if run.state.ended:
                events.note(run.state.ended)
        # a signal stopped it, mid-epoch or between epochs
        interrupted = run.state.epoch < run.config.epochs and not run.state.ended
        if interrupted and writes:
            run.save(out / "last.pt", with_optimizer=True)
            events.note(f"interrupted: saved {out / 'last.pt'}; continue with `catdog train --resume {out}`")
    if best_state is None and save_checkpoints and (out / "best.pt").exists():  # resumed after the best epoch
        best_state = checkpoints.load(out / "best.pt")["state_dict"]  # on every rank: all evaluate it together
    return final_eval(run, out, best_state, interrupted, final_splits, writes)


def fit(
    config: TrainConfig | Checked[TrainConfig],
    out: Path | str | None = None,
    events: Events | None = None,
    cache: DecodeCache | None = None,
    name: str | None = None,
) -> TrainResult:
    """Train, keeping best.pt (best val accuracy) and last.pt, and return the run record (run.json). Without
    `out`, the run goes to runs/trainN, or runs/train/NAME with a `name`. `config` is checked here, unless it comes
    checked (`config.check()`: the CLI checks before torch loads)."""
    world = distributed.init()
    events = events if events is not None and world.main else Events()
    checked = config if isinstance(config, Checked) else config.check()
    config = checked.given
    with ExitStack() as stack:  # the folder is claimed before any work (two runs never share one), held to the end
        folder = distributed.main_enters(stack, lambda: run_folder(out, "train", name=name), world)
        dataset = load_dataset(config.data, config.val_split, config.seed, root=checked.data)
        run = start_run(config, dataset, events, cache, world=world, out=folder)
        return train_loop(run, folder, events)
