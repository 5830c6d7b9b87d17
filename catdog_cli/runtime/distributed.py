"""Running under torchrun: one process per device, PyTorch's own distributed engine, no launcher of ours.

Every collective takes the `World` it runs in: a world of one (outside torchrun, or a compare cell that
trains alone on its rank) makes it a no-op, so the engine calls these helpers unconditionally.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from catdog_cli.core.world import World
from catdog_cli.errors import CatdogError


def init() -> World:
    """Join torchrun's process group (once: later calls find it joined) and return this process's World.

    The entry points that train (fit, resume, compare) call it; everything else asks `current()`.
    """
    world = World.from_env()
    if world.distributed and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group(backend, timeout=timedelta(minutes=_timeout_minutes()))
    return current()


def _timeout_minutes() -> float:
    """How long a rank waits for the others (CATDOG_DIST_TIMEOUT_MIN, default 30)."""
    value = os.environ.get("CATDOG_DIST_TIMEOUT_MIN", "30")
    try:
        minutes = float(value)
    except ValueError:
        minutes = -1.0
    if not 0 < minutes < float("inf"):
        raise CatdogError(f"CATDOG_DIST_TIMEOUT_MIN={value!r}: expected a number of minutes above 0")
    return minutes


def current() -> World:
    """This process's World, without side effects: the process group's ranks once joined, else torchrun's env."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), World.from_env().local_rank)
    return World.from_env()


def device_for(requested: str, w: World) -> str:
    """Under torchrun each rank takes its own GPU (cuda:LOCAL_RANK), or the CPU with gloo."""
    if not w.distributed:
        return requested
    if requested == "cpu" or not torch.cuda.is_available():
        if requested.startswith("cuda"):
            raise CatdogError("--device cuda under torchrun, but no CUDA GPU is visible")
        return "cpu"
    return f"cuda:{w.local_rank}"


def all_sum(t: torch.Tensor, w: World) -> torch.Tensor:
    """Sum over ranks, in place; the identity for a world of one."""
    if w.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_min(value: int, device: torch.device, w: World) -> int:
    """The smallest value over ranks (e.g. steps per epoch, which every rank must agree on)."""
    if not w.distributed:
        return value
    t = torch.tensor([value], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def any_rank(flag: bool, device: torch.device, w: World) -> bool:
    """True if the flag is set on any rank: every rank stops at the same step, none waits forever."""
    if not w.distributed:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast(obj: Any, w: World) -> Any:
    """Rank 0's value on every rank (e.g. the output folder it created)."""
    if not w.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


T = TypeVar("T")


def main_enters(stack: ExitStack, context: Callable[[], AbstractContextManager[T]], w: World) -> T:
    """Rank 0 enters `context()` (held until `stack` closes, e.g. a claimed run folder) and every rank gets what it
    gave, or the CatdogError it raised: no rank waits forever on a rank 0 that refused."""
    value: Any = None
    if w.main:
        try:
            value = stack.enter_context(context())
        except CatdogError as exc:
            value = exc
    value = broadcast(value, w)
    if isinstance(value, CatdogError):
        raise value
    return value


def gather(obj: Any, w: World, group: Any = None) -> list[Any]:
    """Every rank's value, on every rank, in rank order (over `group`, by default every rank's default group)."""
    if not w.distributed:
        return [obj]
    out: list[Any] = [None] * w.size
    dist.all_gather_object(out, obj, group=group)
    return out


# compare's ranks meet only when the grid is done: a rank whose cells took hours longer is not a hung rank
PATIENT = timedelta(days=7)


def patient_group(w: World) -> Any:
    """A gloo group over every rank with a timeout of days (None for a world of one), for the one meeting after
    long, uneven work: over NCCL, a rank that arrives 30 minutes after the others trips the watchdog and the
    job is aborted. Every rank must call it at the same point (creating a group is itself collective)."""
    if not w.distributed:
        return None
    return dist.new_group(backend="gloo", timeout=PATIENT)


def together(work: Callable[[], T], w: World) -> T:
    """`work()` on every rank; a CatdogError on any rank is raised on every rank. Work that can fail on one rank
    alone (its shard of val has no readable image) would otherwise leave the others waiting in their next
    collective until the timeout."""
    if not w.distributed:
        return work()
    value: Any = None
    error: CatdogError | None = None
    try:
        value = work()
    except CatdogError as exc:
        error = exc
    failed = [(rank, message) for rank, message in enumerate(gather(error and str(error), w)) if message]
    if error is not None:
        raise error
    if failed:
        rank, message = failed[0]
        raise CatdogError(f"rank {rank}: {message}")
    return value


def sync_buffers(module: torch.nn.Module, w: World) -> None:
    """Rank 0's BatchNorm statistics everywhere, so every rank ends with the same model."""
    if w.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def shutdown() -> None:
    """Leave the process group; the CLI calls it after a clean run only. After an error a process just exits:
    destroying a group whose other ranks wait in a collective can wait with them (NCCL); torchrun ends them."""
    if dist.is_initialized():
        dist.destroy_process_group()
