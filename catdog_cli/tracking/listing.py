"""`catdog runs`: the runs under a folder (default runs/), found again from their own records.

A run folder is one that holds a record (run.json: train; compare.json: compare; lr_find.json: lr-find) or the
start of one (last.pt, metrics.csv, compare-config.json: a run that never got to write its record). Its status:
finished, early-stopped, interrupted (Ctrl-C: `--resume` continues it), running (its lock is held by a live
process), or failed (no record and nobody running it: killed, or ended in an error).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from typing_extensions import TypedDict

from catdog_cli.core.paths import LOCK
from catdog_cli.errors import CatdogError

RECORDS = {"run.json": "train", "compare.json": "compare", "lr_find.json": "lr-find"}
# files a run writes before its record: a folder with one of them and no record is a run cut short
STARTED = {"last.pt": "train", "metrics.csv": "train", "compare-config.json": "compare"}
SORTS = ("date", "name", "acc")
SKIPPED = {"mlartifacts", "tensorboard", "cells"}  # folders of a run's (or the local MLflow store's) own files


class RunEntry(TypedDict):
    """One run in `catdog runs` (and its --json)."""

    name: str  # the folder, relative to the folder listed
    command: str
    date: str  # when its record (or its newest file) was written, local time
    data: str | None
    backbone: str | None
    strategy: str | None
    epochs: str | None  # "done/asked" (train); per cell (compare)
    best_val_acc: float | None
    status: str
    path: str
    files: list[str]


def _status_train(record: dict[str, Any]) -> str:
    if record.get("interrupted"):
        return "interrupted"
    return "early-stopped" if str(record.get("ended", "")).startswith("early stopping") else "finished"


def _status_compare(record: dict[str, Any]) -> str:
    rows = record.get("rows", [])
    if record.get("interrupted"):
        return "interrupted"
    return "failed" if rows and all(r.get("status") != "ok" for r in rows) else "finished"


def _running(folder: Path) -> bool:
    """Whether a live process holds the folder's lock (a lock left by a killed run does not count)."""
    try:
        pid = int((folder / LOCK).read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def _entry(folder: Path, root: Path, command: str, record: dict[str, Any] | None, stamp: float) -> RunEntry:
    config = record.get("config", {}) if record else {}
    entry: RunEntry = {
        "name": folder.relative_to(root).as_posix(),
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)),
        "data": Path(config["data"]).name if config.get("data") else None,
        "backbone": ",".join(config.get("backbones", [])) or config.get("backbone"),
        "strategy": ",".join(config.get("strategies", [])) or config.get("strategy"),
        "epochs": None,
        "best_val_acc": None,
        "status": "running" if _running(folder) else "failed",
        "path": str(folder),
        "files": sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")),
    }
    if record is None:
        return entry
    if command == "train":
        entry |= {"epochs": f"{record.get('epochs')}/{config.get('epochs')}", "status": _status_train(record)}
        entry["best_val_acc"] = record.get("best_val_acc")
    elif command == "compare":
        accuracies = [r["best_val_acc"] for r in record.get("rows", []) if r.get("best_val_acc") is not None]
        entry |= {"epochs": str(config.get("epochs")), "status": _status_compare(record)}
        entry["best_val_acc"] = max(accuracies, default=None)
    else:
        entry["status"] = "finished"
        entry["strategy"] = ",".join(c["strategy"] for c in record.get("curves", []))
    return entry


def read_run(folder: Path, root: Path) -> RunEntry | None:
    """The run in `folder`, or None when it holds none. A record that cannot be read lists the run as failed."""
    for name, command in RECORDS.items():
        path = folder / name
        if path.is_file():
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                record = None
            if not isinstance(record, dict):
                return _entry(folder, root, command, None, path.stat().st_mtime) | {"status": "failed"}
            return _entry(folder, root, command, record, path.stat().st_mtime)
    for name, command in STARTED.items():
        if (folder / name).is_file():
            return _entry(folder, root, command, None, (folder / name).stat().st_mtime)
    return None


def find_runs(root: Path | str = "runs") -> list[RunEntry]:
    """Every run under `root`, oldest first. Runs may hold runs (runs/train, the first train run, holds the named
    ones, runs/train/NAME); compare's cells hold no record of their own and are not runs."""
    root = Path(root)
    if not root.is_dir():
        raise CatdogError(f"no runs at {root}: not a folder (run `catdog train` first, or name the runs folder)")
    found = []
    for folder, subfolders, _ in os.walk(root):
        entry = read_run(Path(folder), root) if Path(folder) != root else None
        if entry is not None:
            found.append(entry)
        subfolders[:] = sorted(s for s in subfolders if not s.startswith(".") and s not in SKIPPED)
    return sorted(found, key=lambda e: (e["date"], e["name"]))


def select(
    runs: list[RunEntry],
    data: str | None = None,
    backbone: str | None = None,
    strategy: str | None = None,
    sort: str = "date",
) -> list[RunEntry]:
    """The runs whose data, backbone and strategy contain the words given (any case), in the order asked for:
    date (oldest first), name, or acc (best first)."""
    if sort not in SORTS:
        raise CatdogError(f"--sort {sort}: use one of {', '.join(SORTS)}")
    wanted = {"data": data, "backbone": backbone, "strategy": strategy}
    for key, word in wanted.items():
        if word is not None and not word.strip():
            raise CatdogError(f"--{key} '{word}': give a word to look for")
    kept = [r for r in runs if all(w is None or w.lower() in (r[k] or "").lower() for k, w in wanted.items())]  # type: ignore[literal-required]
    if sort == "name":
        return sorted(kept, key=lambda r: r["name"])
    if sort == "acc":
        return sorted(kept, key=lambda r: -(r["best_val_acc"] if r["best_val_acc"] is not None else -1.0))
    return kept


def find_run(runs: list[RunEntry], name: str) -> RunEntry:
    """The run named NAME: its folder under the listed one (train/exp), or only the folder's own name (exp)."""
    exact = [r for r in runs if r["name"] == name.strip("/")]
    matches = exact or [r for r in runs if Path(r["name"]).name == name]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CatdogError(f"no run named {name!r} (see `catdog runs`)")
    raise CatdogError(f"{len(matches)} runs are named {name!r}: {', '.join(r['name'] for r in matches)}; name one")
