"""--log mlflow against real MLflow, read back through its own client: the local store a run makes next to the
runs, a resumed run continuing its MLflow run, a compare grid as a parent with a child per cell, and a real
tracking server (`mlflow server` on 127.0.0.1, started and stopped here) that dies in the middle of a run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import TINY_CLI, Recorder, catdog, labeled_folder, ok_json

from catdog_cli.core.config import CompareConfig, TrainConfig
from catdog_cli.tracking.base import STATE_FILE, follow
from catdog_cli.training.compare import compare
from catdog_cli.training.loop import fit
from catdog_cli.training.resume import resume

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

TINY = {"backbone": "squeezenet1_1", "weights": "none", "image_size": 32, "batch_size": 4, "device": "cpu"}
SERVER_START_SECONDS = 240  # a cold `mlflow server` takes ~70 s on a loaded 2-core machine


def local_client(runs: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")


def catdog_runs(client: MlflowClient, query: str = "") -> list:
    experiment = client.get_experiment_by_name("catdog")
    return client.search_runs([experiment.experiment_id], query, order_by=["attributes.start_time ASC"])


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def tracked_fit(config: TrainConfig, out: Path, inner: Recorder, **options) -> dict:
    with follow(["mlflow"], "train", inner, **options) as events:
        result = fit(config, out, events)
        events.finish(result)
    return result


def test_a_run_in_the_local_store_next_to_the_runs(runs: Path, tmp_path: Path) -> None:
    data = labeled_folder(tmp_path / "data")
    inner = Recorder()
    result = tracked_fit(TrainConfig(str(data), epochs=2, **TINY), runs / "train", inner, log_model=True)
    assert inner.notes == []  # no warning
    (run,) = catdog_runs(local_client(runs))
    client = local_client(runs)
    assert (run.info.run_name, run.info.status) == ("train", "FINISHED")
    assert history(client, run.info.run_id, "val_acc") == [(h["epoch"], h["val_acc"]) for h in result["history"]]
    assert history(client, run.info.run_id, "train_loss") == [(h["epoch"], h["train_loss"]) for h in result["history"]]
    assert run.data.metrics["best_val_acc"] == result["best_val_acc"]
    assert run.data.metrics["final_val_acc"] == result["evaluation"]["accuracy"]
    params = run.data.params
    assert (params["backbone"], params["strategy"], params["config.epochs"]) == ("squeezenet1_1", "finetune", "2")
    assert params["data"] == str(data.resolve()) and params["version.torch"] == result["versions"]["torch"]
    assert run.data.tags["catdog.command"] == "train"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "report.html",
        "run.json",
        "metrics.csv",
        "best.pt",
    }
    saved = json.loads((runs / "train" / STATE_FILE).read_text())["mlflow"]
    assert saved == {"uri": f"sqlite:///{(runs / 'mlflow.db').resolve()}", "run_id": run.info.run_id}


class StopAfter(Recorder):
    """Ctrl-C as the engine sees it, right after epoch `epoch` is told."""

    def __init__(self, epoch: int):
        super().__init__()
        self.stop_epoch = epoch

    def epoch(self, record):
        super().epoch(record)
        if record["epoch"] == self.stop_epoch:
            signal.raise_signal(signal.SIGINT)


def test_a_resumed_run_continues_its_mlflow_run(runs: Path, tmp_path: Path) -> None:
    data = labeled_folder(tmp_path / "data")
    stopped = tracked_fit(TrainConfig(str(data), epochs=2, **TINY), runs / "train", StopAfter(1))
    assert stopped["interrupted"]
    client = local_client(runs)
    (run,) = catdog_runs(client)
    assert run.info.status == "KILLED"
    with follow(["mlflow"], "train", Recorder()) as events:
        done = resume(runs / "train", None, events)
        events.finish(done)
    (again,) = catdog_runs(client)  # the same run, not a second one
    assert (again.info.run_id, again.info.status) == (run.info.run_id, "FINISHED")
    assert history(client, run.info.run_id, "val_acc") == [(h["epoch"], h["val_acc"]) for h in done["history"]]
    assert [s for s, _ in history(client, run.info.run_id, "val_acc")] == [1, 2]


def test_a_compare_grid_is_a_parent_run_with_a_child_per_cell(runs: Path, tmp_path: Path) -> None:
    data = labeled_folder(tmp_path / "data")
    config = CompareConfig(
        TrainConfig(str(data), epochs=1, **TINY), backbones=["squeezenet1_1"], strategies=["freeze", "finetune"]
    )
    with follow(["mlflow"], "compare", Recorder()) as events:
        result = compare(config, runs / "compare", events)
        events.finish(result)
    client = local_client(runs)
    parent = catdog_runs(client, "tags.`catdog.command` = 'compare'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    children = catdog_runs(client, f"tags.`mlflow.parentRunId` = '{parent[0].info.run_id}'")
    by_cell = {c.info.run_name: c for c in children}
    assert by_cell.keys() == {"squeezenet1_1 / freeze", "squeezenet1_1 / finetune"}
    for row in json.loads((runs / "compare" / "compare.json").read_text())["rows"]:
        child = by_cell[f"{row['backbone']} / {row['strategy']}"]
        assert child.info.status == "FINISHED"
        assert child.data.metrics["best_val_acc"] == row["best_val_acc"]
        assert child.data.params["strategy"] == row["strategy"]
        assert history(client, child.info.run_id, "val_acc") == [(h["epoch"], h["val_acc"]) for h in row["history"]]
    assert parent[0].data.metrics["best_val_acc"] == max(r["best_val_acc"] for r in result["rows"])
    assert {a.path for a in client.list_artifacts(parent[0].info.run_id)} >= {"compare.json", "report.html"}


def test_lr_find_logs_each_strategys_curve(runs: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = labeled_folder(tmp_path / "data")
    args = ("lr-find", "--data", data, *TINY_CLI, "--strategies", "freeze", "--steps", "12", "--batch-size", "4")
    result = ok_json(catdog(*args, "--log", "mlflow", "--name", "first", "--json"))
    (curve,) = result["curves"]
    client = local_client(runs)
    (run,) = catdog_runs(client)
    assert (run.info.run_name, run.info.status) == ("first", "FINISHED")
    assert history(client, run.info.run_id, "freeze.loss") == list(enumerate(curve["losses"]))
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"lr_find.html", "lr_find.json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path, store_template: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real `mlflow server` on 127.0.0.1 (SQLite backend store and artifact folder in tmp_path), in a session of
    its own so that stopping it stops its workers too. Started: /health polled until it answers, at most
    SERVER_START_SECONDS (each poll waits on the process, so a server that dies is seen at once). Stopped:
    SIGTERM to its process group, SIGKILL if it has not ended 30 s later."""
    shutil.copy(store_template, tmp_path / "server.db")
    port, log = free_port(), (tmp_path / "server.log").open("w")
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"]
    command += ["--artifacts-destination", (tmp_path / "artifacts").as_uri()]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_SECONDS
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer in {SERVER_START_SECONDS} s: {tail(tmp_path)}")
            try:
                proc.wait(timeout=0.5)
                pytest.fail(f"mlflow server ended with {proc.returncode}: {tail(tmp_path)}")
            except subprocess.TimeoutExpired:
                pass
        yield url, proc
    finally:
        stop(proc)
        log.close()


def tail(tmp_path: Path) -> str:
    return (tmp_path / "server.log").read_text()[-2000:]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class ServerDiesAfter(Recorder):
    """Reads epoch 1 back from the server while it lives, then stops the server: the rest of the run is
    logged to a dead address."""

    def __init__(self, url: str, proc: subprocess.Popen):
        super().__init__()
        self.url, self.proc = url, proc
        self.seen: list = []

    def epoch(self, record):
        super().epoch(record)
        if record["epoch"] == 2:
            client = MlflowClient(self.url)
            (run,) = catdog_runs(client)
            self.seen = [run.info.run_name, run.info.status, history(client, run.info.run_id, "val_acc")]
            stop(self.proc)


def test_a_tracking_server_that_dies_mid_run_costs_one_warning(tmp_path: Path, server) -> None:
    url, proc = server
    data = labeled_folder(tmp_path / "data")
    inner = ServerDiesAfter(url, proc)
    result = tracked_fit(TrainConfig(str(data), epochs=3, **TINY), tmp_path / "run", inner, uri=url)
    first = result["history"][0]
    assert inner.seen == ["run", "RUNNING", [(1, first["val_acc"])]]  # the live run on the server, epoch 1 in it
    assert [r["epoch"] for r in inner.epochs] == [1, 2, 3] and not result["interrupted"]
    (warning,) = inner.notes  # one, however many calls came after
    assert warning.startswith("warning: --log mlflow stopped (") and "127.0.0.1" in warning
    assert warning.endswith(f"the run goes on; its files in {tmp_path / 'run'} are complete")
    assert {"run.json", "report.html", "metrics.csv", "best.pt", "last.pt"} <= set(os.listdir(tmp_path / "run"))
    assert json.loads((tmp_path / "run" / "run.json").read_text())["epochs"] == 3
