"""Where catdog keeps data and where runs go; nothing a user made is ever overwritten."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from catdog_cli.errors import CatdogError


def data_root() -> Path:
    """Datasets fetched by `catdog fetch` live here; CATDOG_HOME overrides the platform default."""
    env = os.environ.get("CATDOG_HOME")
    return Path(env).expanduser() if env else Path(platformdirs.user_data_dir("catdog"))


def new_run_dir(parent: Path | str = "runs", prefix: str = "train") -> Path:
    """Create and return a fresh folder parent/prefix, parent/prefix2, ... (never an existing one)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = parent / (prefix if n == 1 else f"{prefix}{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def check_out_dir(out: Path | str | None) -> None:
    """Refuse a non-empty --out up front, before any work is done for it."""
    if out is not None and Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
        raise CatdogError(f"{out} already exists and is not empty; catdog never overwrites a run (pick a new --out)")


def claim_out_dir(out: Path | str | None, prefix: str) -> Path:
    """Use the user's --out if it is new or empty, else a fresh folder under ./runs/."""
    if out is None:
        return new_run_dir("runs", prefix)
    check_out_dir(out)
    Path(out).mkdir(parents=True, exist_ok=True)
    return Path(out)
