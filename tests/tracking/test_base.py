"""TrackingEvents: the CLI's events passed on unchanged, trackers told the same story, a failing tracker dropped
with one warning while the run goes on; --log checked before any work; rank 0 alone tracks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import TINY_CLI, Recorder, catdog, error_line, labeled_folder

from catdog_cli.errors import CatdogError
from catdog_cli.tracking import base
from catdog_cli.tracking.base import STATE_FILE, TrackingEvents, follow, read_state


def summary(out: Path | str, kind: str = "train", backbone: str = "resnet18", strategy: str = "freeze") -> dict:
    return {"kind": kind, "out": str(out), "backbones": [backbone], "strategies": [strategy]}


def record(epoch: int) -> dict:
    return {"epoch": epoch, "val_acc": 0.5 + epoch / 10}


class Fake:
    """A tracker that writes down what it hears, and can be told to fail at one beat."""

    name = "fake"

    def __init__(self, fail_at: str = ""):
        self.heard: list[tuple[str, Any]] = []
        self.fail_at = fail_at

    def _hear(self, beat: str, what: Any) -> None:
        if beat == self.fail_at:
            raise ConnectionError("server gone\n  (connection refused)")
        self.heard.append((beat, what))

    def begin(self, command, summary, out, saved):
        self._hear("begin", (command, out, saved))
        return {"run_id": "r1"}

    def epoch(self, record):
        self._hear("epoch", record["epoch"])

    def cell(self, summary):
        self._hear("cell", summary["backbones"][0])
        return {"children": {summary["backbones"][0]: "c"}}

    def cell_done(self, row):
        self._hear("cell_done", row["backbone"])

    def end(self, result):
        self._hear("end", result["out"])

    def fail(self):
        self._hear("fail", None)


def test_every_beat_reaches_the_inner_events_and_the_tracker(tmp_path: Path) -> None:
    inner, fake = Recorder(), Fake()
    events = TrackingEvents(inner, "train", [fake])
    events.summary(summary(tmp_path))
    events.epoch(record(1))
    events.note("a note")
    events.epoch(record(2))
    events.finish({"out": str(tmp_path)})
    assert [r["epoch"] for r in inner.epochs] == [1, 2] and inner.notes == ["a note"]
    assert fake.heard == [("begin", ("train", tmp_path, {})), ("epoch", 1), ("epoch", 2), ("end", str(tmp_path))]
    assert json.loads((tmp_path / STATE_FILE).read_text()) == {"fake": {"run_id": "r1"}}


def test_a_run_continued_in_its_folder_hands_the_tracker_what_it_kept(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text(json.dumps({"fake": {"run_id": "earlier"}, "other": {"x": 1}}))
    fake = Fake()
    TrackingEvents(Recorder(), "train", [fake]).summary(summary(tmp_path))
    assert fake.heard == [("begin", ("train", tmp_path, {"run_id": "earlier"}))]
    assert read_state(tmp_path) == {"fake": {"run_id": "r1"}, "other": {"x": 1}}  # the others' state is kept


@pytest.mark.parametrize("beat", ["begin", "epoch", "end"])
def test_a_failing_tracker_costs_one_warning_and_nothing_else(tmp_path: Path, beat: str) -> None:
    inner, broken, fine = Recorder(), Fake(fail_at=beat), Fake()
    fine.name = "fine"
    events = TrackingEvents(inner, "train", [broken, fine])
    events.summary(summary(tmp_path))
    for epoch in (1, 2, 3):
        events.epoch(record(epoch))
    events.finish({"out": str(tmp_path)})
    assert [r["epoch"] for r in inner.epochs] == [1, 2, 3]  # the run's own story is whole
    assert len(inner.notes) == 1
    assert inner.notes[0] == (
        f"warning: --log fake stopped (server gone (connection refused)); the run goes on; its files in {tmp_path} "
        "are complete"
    )
    assert [b for b, _ in fine.heard] == ["begin", "epoch", "epoch", "epoch", "end"]
    heard = {"begin": [], "epoch": ["begin"], "end": ["begin", "epoch", "epoch", "epoch"]}[beat]
    assert [b for b, _ in broken.heard] == heard  # told nothing more after it failed


def test_compare_tells_each_cell_and_keeps_the_children(tmp_path: Path) -> None:
    fake = Fake()
    events = TrackingEvents(Recorder(), "compare", [fake])
    events.summary(summary(tmp_path, "compare", "resnet18,squeezenet1_1"))
    for backbone in ("resnet18", "squeezenet1_1"):
        events.summary(summary("not saved", backbone=backbone))  # each cell's own summary
        events.epoch(record(1))
        events.cell_done({"backbone": backbone})
    beats = [b for b, _ in fake.heard]
    assert beats == ["begin", "cell", "epoch", "cell_done", "cell", "epoch", "cell_done"]
    assert read_state(tmp_path)["fake"]["children"] == {"squeezenet1_1": "c"}  # the last merged over the first


def test_lr_find_is_told_its_folder_at_the_end(tmp_path: Path) -> None:
    fake = Fake()
    events = TrackingEvents(Recorder(), "lr-find", [fake])
    events.summary(summary("not saved"))
    events.summary(summary("not saved", strategy="finetune"))  # the next strategy: not a new run
    events.finish({"out": str(tmp_path)})
    assert fake.heard == [("begin", ("lr-find", None, {})), ("end", str(tmp_path))]


def test_a_command_that_fails_marks_its_tracked_run_failed(tmp_path: Path, monkeypatch) -> None:
    fake = Fake()
    monkeypatch.setattr(base, "open_trackers", lambda names, uri, log_model: [fake])
    monkeypatch.setattr(base, "check", lambda names: None)
    with pytest.raises(CatdogError, match="bad data"), follow(["fake"], "train", Recorder()) as events:
        events.summary(summary(tmp_path))
        raise CatdogError("bad data")
    assert [b for b, _ in fake.heard] == ["begin", "fail"]


def test_a_missing_library_is_one_line_that_names_the_extra(monkeypatch) -> None:
    real = base.importlib.util.find_spec
    monkeypatch.setattr(base.importlib.util, "find_spec", lambda name: None if name == "mlflow" else real(name))
    with pytest.raises(CatdogError) as caught:
        base.check(["mlflow"])
    assert str(caught.value) == "--log mlflow needs mlflow: pip install 'catdog-cli[mlflow]'"
    with pytest.raises(CatdogError, match="--log wandb: no such tracker; use mlflow or tensorboard"):
        base.check(["wandb"])


def test_mlflow_options_need_mlflow() -> None:
    with pytest.raises(CatdogError, match="--log-uri and --log-model are MLflow's"):
        follow([], "train", Recorder(), uri="http://127.0.0.1:1").__enter__()
    with follow(None, "train", Recorder(), log_model=False) as events:
        assert events.trackers == []


def test_only_rank_0_tracks(monkeypatch) -> None:
    monkeypatch.setattr(base, "check", lambda names: None)
    monkeypatch.setattr(base, "open_trackers", lambda names, uri, log_model: [Fake()])
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with follow(["fake"], "train", Recorder()) as events:
        assert events.trackers == []
    monkeypatch.setenv("RANK", "0")
    with follow(["fake"], "train", Recorder()) as events:
        assert len(events.trackers) == 1


def test_without_the_extra_the_command_stops_before_any_work(tmp_path: Path, monkeypatch) -> None:
    real = base.importlib.util.find_spec
    monkeypatch.setattr(base.importlib.util, "find_spec", lambda name: None if name == "tensorboard" else real(name))
    monkeypatch.chdir(tmp_path)
    data = labeled_folder(tmp_path / "data")
    result = catdog("train", "--data", data, *TINY_CLI, "--log", "tensorboard")
    assert error_line(result) == "error: --log tensorboard needs tensorboard: pip install 'catdog-cli[tensorboard]'"
    assert not (tmp_path / "runs").exists()
