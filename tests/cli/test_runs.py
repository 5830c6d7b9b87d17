"""`catdog runs` and `--name` on the command line: a named run is found again by name, with its status."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import TINY_CLI, catdog, error_line, labeled_folder, ok_json


def test_a_named_run_is_listed_and_shown_by_its_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = labeled_folder(tmp_path / "pets")
    train = ("train", "--data", data, *TINY_CLI, "--epochs", "1", "--batch-size", "4", "--name", "baseline")
    assert ok_json(catdog(*train, "--json"))["out"] == "runs/train/baseline"
    assert ok_json(catdog(*train, "--json"))["out"] == "runs/train/baseline2"  # taken: counted on, not overwritten
    listed = ok_json(catdog("runs", "--json"))
    assert [(r["name"], r["status"], r["data"], r["epochs"]) for r in listed] == [
        ("train/baseline", "finished", "pets", "1/1"),
        ("train/baseline2", "finished", "pets", "1/1"),
    ]
    table = catdog("runs")
    assert table.exit_code == 0 and "train/baseline2" in table.stdout and "finished" in table.stdout
    shown = catdog("runs", "baseline2")
    assert "runs/train/baseline2" in shown.stdout and "run.json" in shown.stdout
    assert json.loads(catdog("runs", "baseline", "--json").stdout)["name"] == "train/baseline"
    assert ok_json(catdog("runs", "--json", "--data", "other")) == []


def test_name_and_out_together_are_refused_before_any_work(tmp_path: Path) -> None:
    data = labeled_folder(tmp_path / "pets")
    line = error_line(catdog("train", "--data", data, *TINY_CLI, "--name", "x", "--out", tmp_path / "o"))
    assert line == "error: --name names a new run's folder; --out already says where"
    assert not (tmp_path / "o").exists()
    assert "--name 'a/b': give a plain folder name" in error_line(catdog("train", "--data", data, "--name", "a/b"))
    assert "no runs at" in error_line(catdog("runs", "--root", tmp_path / "none"))
