"""`--log mlflow`: a run's parameters, per-epoch metrics, final numbers and files in an MLflow tracking store.

One MLflow run per catdog run (its name: the run folder's), in the experiment "catdog" ($MLFLOW_EXPERIMENT_NAME
overrides it); a compare grid is a parent run with a nested child run per cell; a resumed run continues its own
MLflow run. The store: --log-uri, else the one the run used before, else $MLFLOW_TRACKING_URI, else a local
SQLite store next to the runs (runs/mlflow.db, files in runs/mlartifacts; `mlflow ui --backend-store-uri
sqlite:///runs/mlflow.db` shows it). MLflow is imported here only, when asked for.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from catdog_cli.core.records import CompareRow, EpochRecord, RunSummary
from catdog_cli.tracking.base import row_metrics

EXPERIMENT = "catdog"
# what each command's record names as its files, logged as the run's artifacts
ARTIFACTS = {
    "train": ("report.html", "run.json", "metrics.csv"),
    "compare": ("report.html", "compare.json", "compare.csv", "compare.md"),
    "lr-find": ("lr_find.html", "lr_find.json"),
}
# a tracking server that is gone must cost seconds, not MLflow's default minutes of retries per call
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
PARAM_LENGTH = 500  # the shortest limit of the MLflow versions in use


def local_store(out: Path) -> Path:
    """The local store's folder for a run in `out`: the nearest folder named runs above it, else its parent."""
    out = out.resolve()
    return next((p for p in out.parents if p.name == "runs"), out.parent)


def summary_params(summary: RunSummary) -> dict[str, Any]:
    """What the run is about (the summary told before work starts), as flat parameters."""
    params: dict[str, Any] = {
        k: summary[k]  # type: ignore[literal-required]
        for k in ("data", "split_origin", "lr", "epochs", "batch_size", "image_size", "augment", "device", "precision")
    }
    params |= {
        "backbone": ",".join(summary["backbones"]),
        "strategy": ",".join(summary["strategies"]),
        "weights": ",".join(sorted(set(summary["weights"].values()))),
        "classes": ",".join(summary["classes"]),
        "recipe": " ".join(summary["recipe"]) or "defaults",
        **{f"images.{split}": n for split, n in summary["images"].items()},
    }
    return params


def epoch_metrics(record: EpochRecord | dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items() if k != "epoch" and isinstance(v, (int, float))}


def final_metrics(result: dict[str, Any]) -> dict[str, float]:
    """A train run's numbers to decide from: the best epoch, and the best weights on val and test."""
    found = {"best_val_acc": result.get("best_val_acc"), "best_epoch": result.get("best_epoch")}
    for split in ("evaluation", "test"):
        if split in result:
            name = "val" if split == "evaluation" else "test"
            found |= {f"final_{name}_acc": result[split]["accuracy"], f"final_{name}_loss": result[split]["loss"]}
    if "calibration" in result:
        found |= {k: result["calibration"][k] for k in ("temperature", "ece_before", "ece_after")}
    return {k: float(v) for k, v in found.items() if v is not None}


def cell_key(backbone: str, strategy: str) -> str:
    return f"{backbone} / {strategy}"


class MlflowTracker:
    name = "mlflow"

    def __init__(self, uri: str | None = None, log_model: bool = False):
        self.uri, self.log_model = uri, log_model
        self.client: Any = None
        self.run_id = ""
        self.experiment_id = ""
        self.command = ""
        self.out: Path | None = None
        self.children: dict[str, str] = {}  # compare: cell -> its nested run
        self.child = ""  # the cell training now ("" between cells)
        self.child_key = ""

    # --- catdog's beats ---------------------------------------------------------------------------------------

    def begin(self, command: str, summary: RunSummary, out: Path | None, saved: dict[str, Any]) -> dict[str, Any]:
        from mlflow.tracking import MlflowClient

        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        for name in ("mlflow", "alembic"):  # "creating initial MLflow database tables...": not catdog's news
            logging.getLogger(name).setLevel(logging.WARNING)
        self.command, self.out = command, out
        root = local_store(out or Path("runs") / command)
        uri = self.uri or saved.get("uri") or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
        self.client = MlflowClient(uri)
        self.children = dict(saved.get("children", {}))
        if saved.get("run_id") and saved.get("uri") == uri:  # a resumed run, a compare finished in its folder
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            self.experiment_id = self.client.get_run(self.run_id).info.experiment_id
        else:
            self.experiment_id = self._experiment(uri, root)
            name = out.name if out is not None else command
            tags = self._tags(command)
            self.run_id = self.client.create_run(self.experiment_id, tags=tags, run_name=name).info.run_id
            self._params(self.run_id, summary_params(summary))
        return {"uri": uri, "run_id": self.run_id}

    def epoch(self, record: EpochRecord) -> None:
        self._metrics(self.child or self.run_id, epoch_metrics(record), step=record["epoch"])

    def cell(self, summary: RunSummary) -> dict[str, Any]:
        self._close_child("FAILED")  # the cell before never said it was done: it failed
        self.child_key = cell_key(summary["backbones"][0], summary["strategies"][0])
        self.child = self._child(self.child_key, summary_params(summary))
        self.children[self.child_key] = self.child
        return {"children": self.children}

    def cell_done(self, row: CompareRow) -> None:
        if self.child and self.child_key == cell_key(row["backbone"], row["strategy"]):
            self._metrics(self.child, row_metrics(row))
            self._close_child("FINISHED")

    def end(self, result: dict[str, Any]) -> None:
        self._close_child("FAILED")
        out = Path(result["out"])
        if self.command == "compare":
            self._compare_end(result)
        elif self.command == "lr-find":
            self._lr_find_end(result)
        else:
            self._metrics(self.run_id, final_metrics(result))
            self.client.set_tag(self.run_id, "catdog.ended", str(result.get("ended", ""))[:PARAM_LENGTH])
        config = {f"config.{k}": v for k, v in result.get("config", {}).items() if not isinstance(v, dict)}
        self._params(self.run_id, config | {f"version.{k}": v for k, v in result.get("versions", {}).items()})
        self.client.set_tag(self.run_id, "mlflow.runName", out.name)
        self.client.set_tag(self.run_id, "catdog.out", str(out.resolve()))
        for name in ARTIFACTS[self.command]:
            if (out / name).is_file():
                self.client.log_artifact(self.run_id, str(out / name))
        if self.log_model and (out / "best.pt").is_file():
            self.client.log_artifact(self.run_id, str(out / "best.pt"))
        self.client.set_terminated(self.run_id, "KILLED" if result.get("interrupted") else "FINISHED")

    def fail(self) -> None:
        if self.client is not None and self.run_id:
            self._close_child("FAILED")
            self.client.set_terminated(self.run_id, "FAILED")

    # --- the commands' ends ------------------------------------------------------------------------------------

    def _compare_end(self, result: dict[str, Any]) -> None:
        """Every cell of compare.json has its child run: those read back from an earlier grid, not trained now,
        get one from their row, with their epochs."""
        for row in result["rows"]:
            key = cell_key(row["backbone"], row["strategy"])
            if key in self.children:
                continue
            child = self._child(key, {"backbone": row["backbone"], "strategy": row["strategy"]})
            for record in row["history"]:
                self._metrics(child, epoch_metrics(record), step=record["epoch"])
            self._metrics(child, row_metrics(row))
            self.client.set_terminated(child, "FINISHED" if row["status"] == "ok" else "FAILED")
            self.children[key] = child
        accuracies = [r["best_val_acc"] for r in result["rows"] if r["best_val_acc"] is not None]
        found = {"cells": len(result["rows"]), "cells_failed": sum(r["status"] != "ok" for r in result["rows"])}
        self._metrics(self.run_id, found | ({"best_val_acc": max(accuracies)} if accuracies else {}))

    def _lr_find_end(self, result: dict[str, Any]) -> None:
        """Each strategy's curve: the loss and the head's lr by step, and the suggested lr."""
        for curve in result["curves"]:
            name = curve["strategy"]
            for step, (lr, loss) in enumerate(zip(curve["lrs"], curve["losses"])):
                self._metrics(self.run_id, {f"{name}.loss": loss, f"{name}.lr": lr}, step=step)
            if curve["suggested_lr"] is not None:
                self._metrics(self.run_id, {f"{name}.suggested_lr": curve["suggested_lr"]})

    # --- MLflow ---------------------------------------------------------------------------------------------

    def _experiment(self, uri: str, root: Path) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        local = uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri
        where = (root / "mlartifacts").resolve().as_uri() if local else None  # a server decides its own
        return self.client.create_experiment(name, artifact_location=where)

    def _tags(self, command: str, parent: str = "") -> dict[str, str]:
        tags = {"catdog.command": command}
        if self.out is not None:
            tags["catdog.out"] = str(self.out.resolve())
        return tags | ({"mlflow.parentRunId": parent} if parent else {})

    def _child(self, key: str, params: dict[str, Any]) -> str:
        run = self.client.create_run(self.experiment_id, tags=self._tags("compare-cell", self.run_id), run_name=key)
        self._params(run.info.run_id, params)
        return run.info.run_id

    def _close_child(self, status: str) -> None:
        if self.child:
            self.client.set_terminated(self.child, status)
        self.child, self.child_key = "", ""

    def _params(self, run_id: str, params: dict[str, Any]) -> None:
        """Parameters not yet logged (MLflow refuses to change one: a resumed run keeps its first values)."""
        from mlflow.entities import Param

        have = self.client.get_run(run_id).data.params
        new = [Param(k, str(v)[:PARAM_LENGTH]) for k, v in params.items() if k not in have]
        for i in range(0, len(new), 100):  # MLflow takes at most 100 per batch
            self.client.log_batch(run_id, params=new[i : i + 100])

    def _metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(run_id, metrics=batch)


def make(uri: str | None, log_model: bool) -> MlflowTracker:
    return MlflowTracker(uri, log_model)
