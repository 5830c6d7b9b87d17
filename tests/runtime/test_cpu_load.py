"""cpu_load: other processes' CPU use now, from /proc/stat with this process's own time taken out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from catdog_cli.runtime import cpu_load
from catdog_cli.runtime.cpu_load import Sample, others_busy, sample


def stat_file(folder: Path, *cores: tuple[int, int, int, int, int, int]) -> Path:
    """A /proc/stat with the given cores' (user, nice, system, idle, iowait, steal); irq 7 and softirq 3 each."""
    lines = [f"cpu{n} {u} {ni} {sy} {i} {w} 7 3 {st} 0 0" for n, (u, ni, sy, i, w, st) in enumerate(cores)]
    path = folder / "stat"
    path.write_text("cpu  1 1 1 1 1 1 1 1 0 0\n" + "\n".join(lines) + "\nintr 1 2 3\n")
    return path


def test_busy_time_counts_every_busy_state_but_idle_and_iowait(tmp_path):
    ticks = os.sysconf("SC_CLK_TCK")
    found = sample(stat_file(tmp_path, (100, 20, 50, 9_000, 400, 30)), cores={0})
    assert found is not None
    assert found.busy_s == pytest.approx((100 + 20 + 50 + 7 + 3 + 30) / ticks)  # steal: taken by another machine


def test_only_the_cores_this_process_may_use_count(tmp_path):
    """Under taskset or a container's cpuset, the host's other cores are busy with work that takes nothing from us."""
    ticks = os.sysconf("SC_CLK_TCK")
    stat = stat_file(tmp_path, (10, 0, 0, 0, 0, 0), (1_000, 0, 0, 0, 0, 0), (20, 0, 0, 0, 0, 0))
    assert sample(stat, cores={0, 2}).busy_s == pytest.approx((10 + 20 + 2 * 10) / ticks)
    assert sample(stat, cores={0, 1, 2}).busy_s == pytest.approx((1_030 + 3 * 10) / ticks)


@pytest.mark.parametrize("text", ["", "intr 1 2 3\n", "cpu 1 2 3\ncpu0 1 2 3\n"])
def test_a_stat_file_it_cannot_read_gives_no_sample(tmp_path, text):
    (tmp_path / "stat").write_text(text)
    assert sample(tmp_path / "stat", cores={0}) is None
    assert sample(tmp_path / "missing", cores={0}) is None


def test_this_process_own_time_is_not_counted_as_others():
    start = Sample(busy_s=100.0, own_s=5.0, wall_s=10.0)
    # 2 s of wall: the cores were busy 3 s in all, 1.2 s of which this process spent (importing torch, say)
    assert others_busy(start, Sample(103.0, 6.2, 12.0)) == pytest.approx(0.9)
    assert others_busy(start, Sample(101.0, 6.2, 12.0)) == 0.0  # counters read at slightly different moments
    assert others_busy(start, start) == 0.0


def test_the_window_starts_at_the_first_mark_and_is_read_once_it_is_long_enough(monkeypatch):
    samples = iter([Sample(0.0, 0.0, 0.0), Sample(3.0, 1.0, 2.0)])
    monkeypatch.setattr(cpu_load, "sample", lambda: next(samples))
    monkeypatch.setattr(cpu_load, "_MARKED", False)
    monkeypatch.setattr(cpu_load, "_MARK", None)  # restored afterwards: no fake mark leaks into later tests
    monkeypatch.setattr(cpu_load.time, "monotonic", lambda: 2.0)  # the mark is 2 s old: nothing to wait for
    monkeypatch.setattr(cpu_load.time, "sleep", lambda s: pytest.fail(f"slept {s} s past a long enough window"))
    cpu_load.mark()
    cpu_load.mark()  # a second mark keeps the first
    assert cpu_load.busy_cores() == pytest.approx(1.0)


def test_without_proc_stat_there_is_no_figure(monkeypatch):
    monkeypatch.setattr(cpu_load, "sample", lambda: None)
    monkeypatch.setattr(cpu_load, "_MARKED", False)
    monkeypatch.setattr(cpu_load, "_MARK", None)  # restored afterwards: no fake mark leaks into later tests
    assert cpu_load.busy_cores() is None
