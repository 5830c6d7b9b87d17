"""The tracking tests' MLflow store: made once (creating one runs MLflow's migrations, seconds), copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store."""
    mlflow = pytest.importorskip("mlflow")
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    mlflow.tracking.MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def runs(tmp_path: Path, store_template: Path) -> Path:
    """tmp_path/runs, with the (empty) local store a first --log mlflow would make in it."""
    (tmp_path / "runs").mkdir()
    shutil.copy(store_template, tmp_path / "runs" / "mlflow.db")
    return tmp_path / "runs"
