"""Continuing a run: `catdog train --resume OUT` picks up from OUT/last.pt.

The run keeps its options (only where it runs may change), its split, its optimizer, scheduler and scaler
state, and its step count: a resumed run takes every step of the uninterrupted one exactly once.

`--resume OUT --epochs N` with more epochs than the run was started with extends it, finished or not: the
weights, optimizer state, history and best.pt carry on, and the learning-rate schedule restarts (warm-up, then
cosine to zero) over the steps from where the run stands to epoch N. The cosine of the original schedule had
already decayed to (nearly) zero, so continuing it would add epochs that barely move the weights.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import fields
from pathlib import Path
from typing import Any

from catdog_cli.core.config import TrainConfig
from catdog_cli.core.events import Events
from catdog_cli.core.paths import resolve_data, run_folder
from catdog_cli.core.records import TrainResult
from catdog_cli.core.validate import check_options
from catdog_cli.core.world import World
from catdog_cli.data.dataset import holds_recorded, load_dataset
from catdog_cli.errors import CatdogError
from catdog_cli.models import checkpoints
from catdog_cli.runtime import distributed
from catdog_cli.runtime.device import resolve_device
from catdog_cli.training.loop import train_loop
from catdog_cli.training.schedule import lr_schedule
from catdog_cli.training.setup import Run, TrainState, start_run

# where and how a run computes, not what it learns: may change on resume
RELOCATABLE = ("device", "precision", "workers", "cache_gib", "compile")


def _data_now(ckpt: dict[str, Any], given: str | None) -> str:
    """Where the run's data is now: `--data` if it names the run's folder or one holding the run's recorded split
    (copied or moved: the split is recorded relative to the data root), else the folder the run saw."""
    recorded = ckpt.get("split") if isinstance(ckpt.get("split"), dict) else None
    if given is None:
        if not Path(ckpt["data"]).is_dir():
            raise CatdogError(
                f"the data this run trained on ({ckpt['data']}) is not there: if it moved (or this is another "
                "machine), pass --data with the folder that holds it now"
            )
        return ckpt["data"]
    root = resolve_data(given)
    if str(root.resolve()) == ckpt["data"] or (recorded is not None and holds_recorded(root, recorded)):
        return str(root.resolve())
    raise CatdogError(
        f"--data {given} differs from the run being resumed ({ckpt['data']}) and does not hold its recorded "
        "split; a resumed run keeps its data (moved or copied is fine)"
    )


def resumed_config(ckpt: dict[str, Any], given: dict[str, Any]) -> TrainConfig:
    """The interrupted run's own config. Options typed again must agree with it, except the RELOCATABLE ones,
    --epochs, which may grow (the run is then extended), and --data, which may name the run's data moved."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}  # for a field an older catdog did not save
    given = dict(given)
    saved = {**defaults, **ckpt["config"], "data": _data_now(ckpt, given.pop("data", None))}
    epochs = given.get("epochs", saved["epochs"])
    if type(saved["epochs"]) is int and epochs < saved["epochs"]:  # a forged non-number: check_options says so
        raise CatdogError(
            f"--epochs {epochs} is fewer than the run being resumed ({saved['epochs']}); a run can be "
            "extended, not shortened"
        )
    for name, value in given.items():
        if name in RELOCATABLE or name == "epochs":
            continue
        if value != saved.get(name):
            allowed = ", ".join("--" + o.replace("_", "-") for o in RELOCATABLE)
            was = "default" if saved.get(name) is None else saved[name]
            raise CatdogError(
                f"--{name.replace('_', '-')} {value} differs from the run being resumed ({was}); "
                f"a resumed run keeps its options (only {allowed} may change)"
            )
    return TrainConfig.from_dict({**saved, "epochs": epochs, **{k: v for k, v in given.items() if k in RELOCATABLE}})


def _resumable(ckpt: dict[str, Any]) -> bool:
    """The training state of a last.pt has the shape this version reads (a newer one's extra fields are fine)."""
    state = ckpt["state"]
    return (
        isinstance(ckpt["config"], dict)
        and isinstance(ckpt["data"], str)
        and isinstance(state, dict)
        and all(type(state.get(k, 0)) is int and state.get(k, 0) >= 0 for k in ("epoch", "step", "schedule_from"))
        and isinstance(state.get("history", []), list)
        and isinstance(ckpt["optimizer"], dict)
        and isinstance(ckpt["scheduler"], dict)
        and isinstance(ckpt["scaler"], dict)
    )


def resume(out: Path | str, given: dict[str, Any] | None = None, events: Events | None = None) -> TrainResult:
    """Continue a run in its own folder from last.pt, with its optimizer, scheduler and scaler state; with more
    `epochs` than it was started with, extend it (finished or not) with a restarted schedule.

    `given`: the TrainConfig fields the user typed. A changed option, or data whose classes changed, is refused
    before anything is decoded or trained.
    """
    world = distributed.init()
    events = events if events is not None and world.main else Events()
    out = Path(out)
    check_options(given or {})
    if not os.path.isfile(out / "last.pt"):  # False, not PermissionError, in a folder that cannot be read
        raise CatdogError(f"nothing to resume in {out}: it has no last.pt")
    ckpt = checkpoints.load(out / "last.pt")
    if any(k not in ckpt for k in ("optimizer", "scheduler", "scaler", "state", "config", "data")):
        raise CatdogError(f"{out / 'last.pt'} holds no training state to resume from; it is not a run's last.pt")
    if not _resumable(ckpt):
        raise CatdogError(
            f"{out / 'last.pt'} is a damaged run checkpoint (its training state makes no sense); "
            "start a new run instead"
        )
    config = resumed_config(ckpt, given or {})  # its data found where it is now
    try:  # the saved options too: a damaged or forged file is refused before anything is loaded
        config.check_settings(weights=False)
    except CatdogError as exc:
        raise CatdogError(f"{out / 'last.pt'} holds options no run can use ({exc}); start a new run instead") from None
    known = {f.name for f in fields(TrainState)}  # a newer catdog's extra state is not ours to use
    state = TrainState(**{k: v for k, v in ckpt["state"].items() if k in known})
    if state.epoch >= config.epochs:
        raise CatdogError(
            f"{out} already ran all {config.epochs} epoch(s); to train it longer, pass --epochs N "
            f"(more than {config.epochs})"
        )
    if state.ended and config.epochs == ckpt["config"].get("epochs"):
        raise CatdogError(
            f"{out} already finished ({state.ended}); to train it longer, pass --epochs N (more than {config.epochs})"
        )
    with ExitStack() as stack:  # one resume at a time in a folder
        distributed.main_enters(stack, lambda: run_folder(out, "train", reuse=True), world)
        return _continue(out, ckpt, config, state, events, world)


def _continue(
    out: Path, ckpt: dict[str, Any], config: TrainConfig, state: TrainState, events: Events, world: World
) -> TrainResult:
    recorded = ckpt.get("split")  # the split the run trained on; an older catdog's last.pt has none
    dataset = load_dataset(
        config.data,
        config.val_split,
        config.seed,
        classes=ckpt["classes"],
        recorded=recorded if isinstance(recorded, dict) else None,
        root=Path(config.data),  # found by resumed_config
    )
    present = set(dataset.splits["train"].labels)
    gone = [name for k, name in enumerate(dataset.classes) if k not in present]
    if gone:
        raise CatdogError(
            f"the classes in {dataset.root} changed since the run started (no training images of "
            f"{', '.join(gone)} now); start a new run instead"
        )
    extend = config.epochs != ckpt["config"].get("epochs", config.epochs)
    # under torchrun this rank's GPU (cuda:LOCAL_RANK), whatever --device cuda:N said
    model = checkpoints.restore_model(ckpt, resolve_device(distributed.device_for(config.device, world)))
    run = start_run(config, dataset, events, model=model, world=world, out=out)
    try:
        _restore_training_state(run, ckpt, state, extend)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:  # another model's, or damaged
        raise CatdogError(
            f"{out / 'last.pt'} holds optimizer state that does not fit its model "
            f"({type(exc).__name__}); start a new run instead"
        ) from None
    run.state = state
    for stale in out.glob(".*.pt.*.tmp"):  # a checkpoint write cut short by kill -9
        stale.unlink(missing_ok=True)
    if extend:
        events.note(
            f"extending {out} from {ckpt['config']['epochs']} to {config.epochs} epochs: the learning-rate "
            "schedule restarts (warm-up, cosine) for the added steps"
        )
    events.note(f"resuming {out} at epoch {state.epoch + 1}/{config.epochs}, step {state.step}")
    return train_loop(run, out, events)


def _restore_training_state(run: Run, ckpt: dict[str, Any], state: TrainState, extend: bool) -> None:
    """Optimizer, scheduler and scaler as saved; `extend`: a new schedule from where the run stands to its new end."""
    if state.schedule_from and not extend:  # an extended run, stopped again: its restarted schedule goes on
        run.scheduler = lr_schedule(run.optimizer, run.config.epochs * run.steps - state.schedule_from)
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if extend:  # made after the optimizer's state is loaded, so it starts from the run's own base LR
        state.schedule_from = state.epoch * run.steps + state.step
        run.scheduler = lr_schedule(run.optimizer, run.config.epochs * run.steps - state.schedule_from)
    else:
        run.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt["scaler"]:  # empty when it was saved without fp16 loss scaling (CPU, bf16)
        run.precision.scaler.load_state_dict(ckpt["scaler"])
    if run.ema is not None and "ema" in ckpt:
        run.ema.load_state_dict(ckpt["ema"])
    if extend:  # an early-stopped run given more epochs goes on
        state.ended = ""
