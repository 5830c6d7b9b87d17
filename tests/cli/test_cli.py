"""The `catdog` command line end to end: JSON shapes, one-line errors, never-overwritten run folders."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from helpers import CLASS_COLORS, make_image
from PIL import Image
from typer.testing import CliRunner

from catdog_cli.cli.app import app
from catdog_cli.core.config import RECIPE_FIELDS

SHARED = Path(__file__).resolve().parents[3] / "shared"
HYMENOPTERA = SHARED / "data" / "hymenoptera_data.zip"
SMALL = ["--weights", "none", "--image-size", "32", "--batch-size", "4", "--device", "cpu", "--workers", "1"]
TINY = ["--backbone", "resnet18", *SMALL]
QUICK = ["--backbone", "squeezenet1_1", *SMALL]  # a run whose backbone is not under test: 0.7 M parameters, not 11 M
runner = CliRunner()


@contextmanager
def working_dir(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def catdog(*args: object):
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def parsed(result) -> object:
    """stdout must be one JSON document and nothing else."""
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def _dataset(root: Path, classes=("cat", "dog"), train=6, val=3, test=2) -> Path:
    for k, cls in enumerate(classes):
        for split, n in (("train", train), ("val", val), ("test", test)):
            for i in range(n):
                make_image(root / split / cls / f"{i}.png", CLASS_COLORS[k], ((48, 36), (36, 48))[i % 2], shade=3 * i)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 2-epoch run with the default output folder, from inside a fresh working directory."""
    work = tmp_path_factory.mktemp("cli")
    data = _dataset(work / "data")
    with working_dir(work):
        result = catdog("train", "--data", data, "--epochs", "2", *TINY, "--json")
    run = parsed(result)
    return {"work": work, "data": data, "run": run, "out": work / run["out"], "stderr": result.stderr}


def test_help_lists_the_five_commands():
    result = catdog("--help")
    assert result.exit_code == 0
    for command in ("fetch", "train", "evaluate", "predict", "compare"):
        assert command in result.stdout


def test_console_script_errors_in_one_line_without_traceback(tmp_path):
    """A real process: the installed `catdog` script, exit code 1, one stderr line, nothing on stdout."""
    exe = shutil.which("catdog")
    cmd = [exe] if exe else [sys.executable, "-m", "catdog_cli"]
    failed = subprocess.run(
        [*cmd, "evaluate", str(tmp_path / "missing.pt"), "--json"], capture_output=True, text=True, timeout=120
    )
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.strip().splitlines() == [f"error: checkpoint not found: {tmp_path / 'missing.pt'}"]


def test_train_json_shape_and_files(trained):
    run, out = trained["run"], trained["out"]
    assert Path(run["out"]) == Path("runs") / "train"  # the default: a new folder under ./runs/
    assert run["epochs"] == 2 and run["best_val_acc"] == max(h["val_acc"] for h in run["history"])
    assert (run["best_val_acc"] * 6).is_integer()  # k of the 6 val images
    assert run["classes"] == ["cat", "dog"]
    assert run["params"]["total"] == run["params"]["trainable"] > 0
    assert run["evaluation"]["num_images"] == 6 and run["test"]["num_images"] == 4
    assert {"best.pt", "last.pt", "metrics.csv", "run.json"} <= {p.name for p in out.iterdir()}
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 3  # header + one row per epoch
    assert json.loads((out / "run.json").read_text()) == run


# The --json documents scripts parse: their keys may grow, never change or move. Pinned as they were when the
# engine was split (issue 11).
TRAIN_KEYS = [
    "kind",
    "config",
    "versions",
    "device",
    "precision",
    "threads",
    "threads_why",
    "classes",
    "split_origin",
    "params",
    "history",
    "epochs",
    "best_epoch",
    "best_val_acc",
    "interrupted",
    "skipped",
    "out",
    "images",
    "evaluation",
    "calibration",
    "top_losses",
    "test",
    "report",
    "split",
    "ended",
    "best_weights",
    "train_counts",
    "ood",
]
TRAIN_CONFIG_KEYS = [
    "data",
    "backbone",
    "strategy",
    "epochs",
    "batch_size",
    "lr",
    "lr_ratio",
    "image_size",
    "weights",
    "device",
    "seed",
    "val_split",
    "augment",
    "compile",
    "cache_gib",
    "workers",
    "weight_decay",
    "precision",
    *RECIPE_FIELDS,
    "ood",
    "ood_keep",
]
EPOCH_KEYS = [
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "seconds",
    "images_per_sec",
    "val_seconds",
]
EVALUATION_KEYS = ["split", "num_images", "accuracy", "loss", "per_class", "confusion", "checkpoint"]
COMPARE_KEYS = [
    "kind",
    "config",
    "device",
    "world_size",
    "classes",
    "split_origin",
    "versions",
    "out",
    "interrupted",
    "wall_seconds",
    "best",
    "rows",
    "weights",
]
COMPARE_CONFIG_KEYS = [
    "data",
    "backbones",
    "strategies",
    "epochs",
    "batch_size",
    "lr",
    "lr_ratio",
    "image_size",
    "weights",
    "device",
    "seed",
    "val_split",
    "cache_gib",
    "workers",
    "precision",
    *RECIPE_FIELDS,
]
ROW_KEYS = [
    "backbone",
    "strategy",
    "status",
    "error",
    "params_total",
    "params_trainable",
    "best_val_acc",
    "best_epoch",
    "val_loss",
    "test_acc",
    "train_seconds",
    "images_per_sec",
    "history",
    "cell_seconds",
]

# how a pass of evaluate or predict ran: the runtime, and the CPU threads and why, as run.json records for train
THROUGHPUT_KEYS = ["runtime", "device", "precision", "threads", "threads_why", "seconds", "images_per_sec"]
EVALUATE_KEYS = [
    "kind",
    "checkpoint",
    "data",
    "classes",
    "backbone",
    "params",
    "config",
    "versions",
    *EVALUATION_KEYS[:-1],
    "evaluation",
    *THROUGHPUT_KEYS,
    "top_losses",
    "tta",
    "skipped",
    "left_out",
    "missing",
    "calibration",
    "unknown",
]
PREDICT_KEYS = ["kind", "checkpoint", "backbone", *THROUGHPUT_KEYS, "predictions"]


def test_train_json_keys_are_pinned(trained):
    run = trained["run"]
    assert list(run) == TRAIN_KEYS and list(run["config"]) == TRAIN_CONFIG_KEYS
    assert all(list(h) == EPOCH_KEYS for h in run["history"])
    assert list(run["evaluation"]) == list(run["test"]) == EVALUATION_KEYS
    assert run["evaluation"]["checkpoint"] == f"best (epoch {run['best_epoch']})"


def test_compare_json_keys_are_pinned(trained, tmp_path):
    result = parsed(
        catdog(
            "compare",
            "--data",
            trained["data"],
            "--backbones",
            "resnet18",
            "--strategies",
            "freeze",
            "--epochs",
            "1",
            *SMALL,
            "--out",
            tmp_path / "cmp",
            "--json",
        )
    )
    assert list(result) == COMPARE_KEYS and list(result["config"]) == COMPARE_CONFIG_KEYS
    assert [list(r) for r in result["rows"]] == [ROW_KEYS]
    assert list(result["rows"][0]["history"][0]) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc"]


def test_evaluate_and_predict_json_keys_are_pinned(trained, tmp_path):
    from catdog_cli.runtime.device import configure_threads

    model = trained["out"] / "best.pt"
    evaluated = parsed(catdog("evaluate", model, "--device", "cpu", "--json"))
    image = make_image(tmp_path / "a.png", CLASS_COLORS[0])
    predicted = parsed(catdog("predict", model, image, "--device", "cpu", "--json"))
    assert list(evaluated) == EVALUATE_KEYS and list(predicted) == PREDICT_KEYS
    for result in (evaluated, predicted, trained["run"]):
        assert (result["threads"], result["threads_why"]) == configure_threads()


def test_default_run_folder_increments_and_keeps_the_old_run(trained):
    before = (trained["out"] / "best.pt").read_bytes()
    with working_dir(trained["work"]):
        run = parsed(catdog("train", "--data", trained["data"], "--epochs", "1", *QUICK, "--json"))
    assert Path(run["out"]) == Path("runs") / "train2"
    assert (trained["work"] / "runs" / "train2" / "best.pt").is_file()
    assert (trained["out"] / "best.pt").read_bytes() == before


def test_non_empty_out_is_refused(trained):
    before = {p.name: p.read_bytes() for p in trained["out"].iterdir()}
    result = catdog("train", "--data", trained["data"], "--epochs", "1", *TINY, "--out", trained["out"], "--json")
    assert_one_line_error(result, "already exists", "never overwrites")
    assert {p.name: p.read_bytes() for p in trained["out"].iterdir()} == before


def test_evaluate_json_shape(trained):
    ev = parsed(catdog("evaluate", trained["out"] / "best.pt", "--device", "cpu", "--json"))
    assert {"accuracy", "loss", "per_class", "confusion"} <= set(ev)
    assert ev["split"] == "val" and ev["num_images"] == 6
    assert [row["class"] for row in ev["per_class"]] == ["cat", "dog"]
    assert {"precision", "recall", "f1", "support"} <= set(ev["per_class"][0])
    assert len(ev["confusion"]) == 2 and sum(map(sum, ev["confusion"])) == 6
    assert ev["accuracy"] == pytest.approx(trained["run"]["evaluation"]["accuracy"])

    test = parsed(
        catdog(
            "evaluate",
            trained["out"] / "best.pt",
            "--data",
            trained["data"],
            "--split",
            "test",
            "--device",
            "cpu",
            "--json",
        )
    )
    assert test["split"] == "test" and test["num_images"] == 4


def test_evaluate_human_output_has_tables(trained):
    result = catdog("evaluate", trained["out"] / "best.pt", "--device", "cpu")
    assert result.exit_code == 0
    assert "confusion" in result.stdout and "cat" in result.stdout and "precision" in result.stdout


def test_predict_json_and_csv(trained, tmp_path):
    images = tmp_path / "images"
    make_image(images / "a.png", CLASS_COLORS[0])
    make_image(images / "deeper" / "b.jpg", CLASS_COLORS[1], (30, 60))
    (images / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n nope")
    csv_path = tmp_path / "predictions.csv"
    result = parsed(
        catdog("predict", trained["out"] / "best.pt", images, "--device", "cpu", "--csv", csv_path, "--json")
    )
    assert result["kind"] == "predict" and result["device"] == "cpu" and result["images_per_sec"] > 0
    rows = result["predictions"]
    assert isinstance(rows, list) and len(rows) == 3
    good = [r for r in rows if "error" not in r]
    assert {Path(r["path"]).name for r in good} == {"a.png", "b.jpg"}
    for r in good:
        assert r["label"] in ("cat", "dog") and 0.5 <= r["confidence"] <= 1
    bad = [r for r in rows if "error" in r]
    assert [Path(r["path"]).name for r in bad] == ["zz_broken.png"]
    assert len(csv_path.read_text().strip().splitlines()) == 4


def test_predict_top_k_and_unsure_in_the_table_csv_and_folders(trained, tmp_path, monkeypatch):
    """--top-k shows the runner-up beside the label, --min-confidence 1 marks every row unsure (a softmax is
    below 1): the table, the CSV and --sort-into all say so, and the labels stay."""
    monkeypatch.setenv("COLUMNS", "200")  # one table row per image
    images = [make_image(tmp_path / "in" / f"{i}.png", CLASS_COLORS[i % 2]) for i in range(2)]
    args = ("predict", trained["out"] / "best.pt", *images, "--device", "cpu", "--top-k", "2", "--min-confidence", "1")
    result = catdog(*args, "--no-unknown", "--csv", tmp_path / "p.csv", "--sort-into", tmp_path / "sorted")
    assert result.exit_code == 0, result.output
    assert "next most likely" in result.stdout and result.stdout.count("(unsure)") == 2
    assert "(2 unsure ones into" in result.stdout
    header, *rows = list(csv.reader((tmp_path / "p.csv").open()))
    assert header == ["path", "label", "confidence", "unsure", "label_2", "confidence_2", "error"]
    assert [r[3] for r in rows] == ["True", "True"] and all({r[1], r[4]} == {"cat", "dog"} for r in rows)
    assert sorted(p.relative_to(tmp_path / "sorted").parts[:2] for p in (tmp_path / "sorted").rglob("*.png")) == sorted(
        ("_unsure", r[1]) for r in rows
    )


def test_predict_and_evaluate_say_what_is_unknown(trained, tmp_path):
    """The checkpoint's detector: predict's CSV and JSON carry unknown and its score, evaluate --unknown-data
    measures it on a folder of neither class."""
    images = [make_image(tmp_path / "in" / f"{i}.png", CLASS_COLORS[2 + i % 2]) for i in range(2)]
    model = trained["out"] / "best.pt"
    result = catdog("predict", model, *images, "--device", "cpu", "--csv", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    header, *rows = list(csv.reader((tmp_path / "p.csv").open()))
    assert header == ["path", "label", "confidence", "unknown", "unknown_score", "error"]
    assert all(r[3] in ("True", "False") and float(r[4]) >= 0 for r in rows)
    found = parsed(catdog("evaluate", model, "--device", "cpu", "--unknown-data", tmp_path / "in", "--json"))
    assert found["unknown"]["unknown_images"] == 2 and 0 <= found["unknown"]["auroc"] <= 1


@pytest.mark.parametrize("json_output", [False, True])
def test_predict_lists_unreadable_files_and_fails_only_when_none_could_be_read(trained, tmp_path, json_output):
    (tmp_path / "broken.jpg").write_bytes(b"")
    model, flags = trained["out"] / "best.pt", ["--device", "cpu", *(["--json"] if json_output else [])]
    good = next(Path(trained["data"]).rglob("*.png"))
    some = catdog("predict", model, tmp_path / "broken.jpg", good, *flags)
    assert some.exit_code == 0 and ("unreadable" in some.stdout or '"error"' in some.stdout)
    none = catdog("predict", model, tmp_path / "broken.jpg", *flags)
    assert none.exit_code == 1 and ("unreadable" in none.stdout or '"error"' in none.stdout)
    assert none.stderr.strip().splitlines()[-1].startswith("error: none of the 1 file(s) could be classified")
    if json_output:
        assert json.loads(none.stdout)["predictions"][0]["path"].endswith("broken.jpg")
    else:
        assert "img/s" not in none.stdout and "no image was classified (" in none.stdout


@pytest.mark.parametrize(
    "case",
    ["missing data", "unknown backbone", "one class", "foreign checkpoint", "missing checkpoint", "missing image"],
)
def test_user_errors_are_one_line_with_exit_code_1(case, tmp_path, trained, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a failed train leaves no runs/ folder behind
    if case == "missing data":
        result = catdog("train", "--data", tmp_path / "nope", *TINY, "--json")
        assert_one_line_error(result, "nope")
    elif case == "unknown backbone":
        result = catdog("train", "--data", trained["data"], *TINY, "--backbone", "resnet9000", "--json")
        assert_one_line_error(result, "unknown backbone 'resnet9000'")
    elif case == "one class":
        data = _dataset(tmp_path / "one", classes=("cat",), test=0)
        result = catdog("train", "--data", data, *TINY, "--json")
        assert_one_line_error(result, "at least 2")
    elif case == "foreign checkpoint":
        path = tmp_path / "resnet.pth"
        torch.save(torch.nn.Linear(2, 2).state_dict(), path)
        result = catdog("evaluate", path, "--data", trained["data"], "--json")
        assert_one_line_error(result, "not a catdog checkpoint")
    elif case == "missing checkpoint":
        result = catdog("predict", tmp_path / "nope.pt", trained["data"], "--json")
        assert_one_line_error(result, "checkpoint not found")
    else:
        result = catdog("predict", trained["out"] / "best.pt", tmp_path / "nope.jpg", "--json")
        assert_one_line_error(result, "no such file")
    assert not (tmp_path / "runs").exists()


def test_json_train_still_shows_epoch_lines_on_stderr(trained):
    assert "epoch   1" in trained["stderr"] and "epoch   2" in trained["stderr"]
    assert "img/s) + val " in trained["stderr"]  # training and validation timed apart


def test_train_recipe_options_reach_the_run_and_the_summary(trained, tmp_path):
    result = catdog(
        "train",
        "--data",
        trained["data"],
        "--epochs",
        "3",
        *QUICK,
        "--strategy",
        "freeze-unfreeze",
        "--freeze-epochs",
        "2",
        "--patience",
        "1",
        "--label-smoothing",
        "0.1",
        "--mixup",
        "0.2",
        "--cutmix",
        "1.0",
        "--ema",
        "--ema-decay",
        "0.99",
        "--balance",
        "--out",
        tmp_path / "r",
    )
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert {k: run["config"][k] for k in RECIPE_FIELDS} == {
        "freeze_epochs": 2,
        "patience": 1,
        "label_smoothing": 0.1,
        "mixup": 0.2,
        "cutmix": 1.0,
        "ema": True,
        "ema_decay": 0.99,
        "balance": True,
    }
    assert "EMA val acc" in result.stderr and "backbone unfrozen" in result.stderr
    block = result.stderr[: result.stderr.index("epoch   1")]  # the summary before the work says so too
    recipe = next(line for line in block.splitlines() if line.startswith("recipe"))
    assert recipe.split(None, 1)[1] == (
        "--freeze-epochs 2, --patience 1, --label-smoothing 0.1, --mixup 0.2, "
        "--cutmix 1.0, --ema, --ema-decay 0.99, --balance"
    )
    assert run["ended"] in result.stdout and "val recall per class" in result.stdout
    assert "EMA val acc" in (tmp_path / "r" / "report.html").read_text()


def test_summary_comes_before_the_first_epoch(trained):
    stderr = trained["stderr"]
    summary = stderr.index("catdog train: resnet18, finetune")
    assert summary < stderr.index("epoch   1")
    block = stderr[summary : stderr.index("epoch   1")]
    for expected in (
        "2 classes: cat, dog",
        "images: train 12, val 6, test 4 (val split: folders)",
        "resnet18, random init: 11.18 M parameters, 11.18 M trainable",
        f"cpu, {trained['run']['precision']}",
    ):  # bf16 on a CPU with native bf16 (--precision auto)
        assert expected in block
    assert re.search(rf"^output +{re.escape(str(Path('runs') / 'train'))}\b", block, re.MULTILINE)


def test_off_a_terminal_nothing_is_wrapped(trained, tmp_path):
    """A pipe or a log file gets one line per event, however long: rich would otherwise break lines at 80."""
    data = tmp_path / ("a-folder-with-a-long-name-" * 4) / "data"
    shutil.copytree(trained["data"], data)
    (data / "val" / "cat" / ("truncated-" * 6 + ".png")).write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    result = catdog("evaluate", trained["out"] / "best.pt", "--data", data, "--device", "cpu")
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 1 and skipped[0].endswith(".png: not an image, or a format Pillow cannot read")
    assert len(skipped[0]) > 150
    title = next(line for line in result.stdout.splitlines() if "val split: accuracy" in line)
    assert title.endswith("images")  # the table's title line too


def test_evaluate_counts_a_freeze_models_trainable_parameters_as_train_did(frozen_run):
    ev = parsed(catdog("evaluate", frozen_run["out"] / "best.pt", "--device", "cpu", "--json"))
    assert ev["params"] == frozen_run["result"]["params"]
    assert ev["params"]["trainable"] == 2 * 512 + 2  # the new head alone


def test_evaluating_all_says_training_images_are_in_the_number(trained):
    result = catdog("evaluate", trained["out"] / "best.pt", "--split", "all", "--device", "cpu", "--json")
    assert parsed(result)["num_images"] == 12 + 6 + 4
    assert "--split all includes the 12 training images" in result.stderr


def test_predict_lists_images_in_natural_order(trained, tmp_path):
    for n in (100, 2, 10, 1):
        make_image(tmp_path / "photos" / f"{n}.png", CLASS_COLORS[n % 2])
    rows = parsed(catdog("predict", trained["out"] / "best.pt", tmp_path / "photos", "--device", "cpu", "--json"))[
        "predictions"
    ]
    assert [Path(r["path"]).name for r in rows] == ["1.png", "2.png", "10.png", "100.png"]


def test_csv_is_replaced_only_when_asked(trained, tmp_path):
    image = make_image(tmp_path / "a.png", CLASS_COLORS[0])
    csv_path = tmp_path / "out.csv"
    csv_path.write_text("mine\n")
    refused = catdog("predict", trained["out"] / "best.pt", image, "--device", "cpu", "--csv", csv_path)
    assert_one_line_error(refused, "already exists", "--overwrite")
    assert csv_path.read_text() == "mine\n"
    assert_one_line_error(catdog("predict", trained["out"] / "best.pt", image, "--overwrite"), "--csv")
    done = catdog("predict", trained["out"] / "best.pt", image, "--device", "cpu", "--csv", csv_path, "--overwrite")
    assert done.exit_code == 0 and csv_path.read_text().splitlines()[1].startswith(str(image))


def test_predict_explain_writes_a_picture_per_image_and_never_replaces_one(trained, tmp_path):
    images = [
        make_image(tmp_path / "in" / name, CLASS_COLORS[k], (60, 40)) for k, name in enumerate(("a.png", "b.jpg"))
    ]
    (tmp_path / "in" / "broken.png").write_bytes(b"")
    out = tmp_path / "explained"
    rows = parsed(
        catdog("predict", trained["out"] / "best.pt", tmp_path / "in", "--device", "cpu", "--explain", out, "--json")
    )["predictions"]
    pictures = {Path(r["path"]).name: Path(r["explanation"]) for r in rows if "explanation" in r}
    assert pictures == {"a.png": out / "a.jpg", "b.jpg": out / "b.jpg"}
    for picture in pictures.values():
        with Image.open(picture) as im:
            assert im.format == "JPEG" and im.width == 320 and im.height > 320  # the view, and its caption
    again = parsed(
        catdog("predict", trained["out"] / "best.pt", images[0], "--device", "cpu", "--explain", out, "--json")
    )["predictions"]
    assert Path(again[0]["explanation"]) == out / "a-1.jpg" and sorted(p.name for p in out.iterdir()) == [
        "a-1.jpg",
        "a.jpg",
        "b.jpg",
    ]


def test_evaluate_report_shows_where_the_model_looked_in_its_mistakes(trained, tmp_path):
    swapped = tmp_path / "swapped"  # each class folder holds the other class's images: every one is a mistake
    for k, name in enumerate(("dog", "cat")):
        for i in range(3):
            make_image(swapped / name / f"{i}.png", CLASS_COLORS[k], (48, 36), shade=4 * i)
    report = tmp_path / "report.html"
    ev = parsed(
        catdog(
            "evaluate", trained["out"] / "best.pt", "--data", swapped, "--device", "cpu", "--report", report, "--json"
        )
    )
    top = ev["top_losses"]
    assert top and all(len(t["heatmap"]["grid"]) == 2 for t in top)  # resnet18 at 32 px: a 2 x 2 map
    assert all(t["heatmap"]["crop"] == pytest.approx(32 / 37) for t in top)  # the eval crop of a 37 px resize
    assert report.read_text().count('alt="where the model looked in') == len(top)
    plain = parsed(catdog("evaluate", trained["out"] / "best.pt", "--data", swapped, "--device", "cpu", "--json"))
    assert not any("heatmap" in t for t in plain["top_losses"])  # without a report, no time spent on maps


# --- real data (skipped without ../shared) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def hymenoptera(tmp_path_factory):
    if not HYMENOPTERA.is_file():
        pytest.skip("../shared/data/hymenoptera_data.zip is absent")
    root = tmp_path_factory.mktemp("hymenoptera")
    with zipfile.ZipFile(HYMENOPTERA) as z:
        z.extractall(root)
    return root / "hymenoptera_data"


def test_real_data_train_evaluate_predict(hymenoptera, tmp_path):
    out = tmp_path / "run"
    run = parsed(
        catdog(
            "train",
            "--data",
            hymenoptera,
            "--backbone",
            "resnet18",
            "--weights",
            "none",
            "--image-size",
            "32",  # real files decoded and trained on: the crop size is not what this test is about
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--out",
            out,
            "--json",
        )
    )
    assert run["epochs"] == 1 and Path(run["out"]) == out
    accuracy = run["best_val_acc"]  # k of the 153 val images, and what the best weights score again at the end
    assert accuracy * 153 == pytest.approx(round(accuracy * 153)) and run["evaluation"]["accuracy"] == accuracy
    assert run["classes"] == ["ants", "bees"]
    gif = hymenoptera / "train" / "ants" / "imageNotFound.gif"
    # the placeholder GIF is either decoded like any image or reported as skipped, by name
    assert all(s["path"] == str(gif) for s in run["skipped"])

    ev = parsed(catdog("evaluate", out / "best.pt", "--device", "cpu", "--json"))
    assert ev["num_images"] == 153 and len(ev["per_class"]) == 2 and sum(map(sum, ev["confusion"])) == 153

    rows = parsed(catdog("predict", out / "best.pt", hymenoptera / "val" / "bees", gif, "--device", "cpu", "--json"))[
        "predictions"
    ]
    assert len(rows) == len(list((hymenoptera / "val" / "bees").iterdir())) + 1
    assert all(("label" in r and "confidence" in r) or r["path"] == str(gif) for r in rows)
    assert any(r["path"] == str(gif) for r in rows)


def test_help_and_fetch_start_without_importing_torch():
    """`catdog --help` and `catdog fetch` answer in a blink: torch loads only for commands that need it."""
    code = (
        "import sys; from typer.testing import CliRunner; from catdog_cli.cli.app import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "r = CliRunner().invoke(app, ['fetch', '--help']); assert r.exit_code == 0, r.output; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
