"""How many cores other processes keep busy right now: what catdog's default thread count leaves to them.

The 1-minute load average counts catdog's own previous command for a minute after it ended, so that commands run
back to back on a quiet 2-core machine trained on one thread, 1.6x slower (benchmarks/README.md, threads_choice).
Linux's /proc/stat counts the busy time of every core; this process's own CPU time is taken out, over the window
from `mark()` (the CLI marks before it imports torch) to the moment the threads are chosen. Torch-free.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

SAMPLE_S = 0.25  # the shortest window worth reading: a caller that never marked waits out the rest, once
PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class Sample:
    busy_s: float  # CPU seconds the cores spent busy since boot (a hypervisor's steal counts: not ours to use)
    own_s: float  # CPU seconds this process spent, all its threads
    wall_s: float  # the monotonic clock


def usable_cores() -> set[int] | None:
    """The cores this process may run on (a container's or taskset's share, not the machine's); None where the
    system does not say (macOS, Windows)."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:
        return None


def sample(stat: Path = PROC_STAT, cores: set[int] | None = None) -> Sample | None:
    """The counters now, summed over `cores` (default: `usable_cores`: a taskset or a container's cpuset
    leaves the host's other cores out); None without /proc/stat."""
    try:
        lines = [line.split() for line in stat.read_text().splitlines() if line.startswith("cpu")]
    except OSError:
        return None
    cores = usable_cores() if cores is None else cores
    rows = [f for f in lines if f[0] != "cpu" and (cores is None or int(f[0][3:]) in cores)]
    if not rows or any(len(f) < 9 for f in rows):
        return None
    busy = 0
    for f in rows:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f[1:9])
        busy += user + nice + system + irq + softirq + steal
    own = os.times()
    return Sample(busy / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.monotonic())


def others_busy(start: Sample, end: Sample) -> float:
    """Cores' worth of other processes' work between two samples (this process's own time taken out)."""
    wall = end.wall_s - start.wall_s
    if wall <= 0:
        return 0.0
    return max(0.0, (end.busy_s - start.busy_s) - (end.own_s - start.own_s)) / wall


_MARKED = False
_MARK: Sample | None = None  # the first mark of this process (None: no /proc/stat to read)


def mark() -> None:
    """Start the window (once per process; later calls keep the first mark)."""
    global _MARKED, _MARK
    if not _MARKED:
        _MARKED, _MARK = True, sample()


def busy_cores() -> float | None:
    """The cores other processes kept busy since `mark()`, over at least SAMPLE_S; None without /proc/stat."""
    mark()
    if _MARK is None:
        return None
    wait = SAMPLE_S - (time.monotonic() - _MARK.wall_s)
    if wait > 0:  # marked just now (a Python caller): the rest of the shortest window
        time.sleep(wait)
    end = sample()
    return others_busy(_MARK, end) if end is not None else None
