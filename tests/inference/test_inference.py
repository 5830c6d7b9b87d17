"""Using a trained model: evaluate a checkpoint on any split, predict images and folders, write the CSV."""

from __future__ import annotations

import csv
import errno
import math
import os
import re
import shutil
import stat
from pathlib import Path

import pytest
import torch
from helpers import CLASS_COLORS, Recorder, catdog, make_image, ok_json, snapshot

from catdog_cli.data.dataset import load_dataset
from catdog_cli.errors import CatdogError
from catdog_cli.inference import evaluate as inference
from catdog_cli.inference.evaluate import evaluate_checkpoint
from catdog_cli.inference.predict import classify, predict, sort_into_folders, write_predictions_csv
from catdog_cli.models import checkpoints


def test_evaluate_rederives_the_val_split_of_the_training_folder(frozen_run):
    # at the precision the run evaluated in (bf16 on a CPU with native bf16; inference's default is fp32)
    trained_in = frozen_run["result"]["precision"]
    result = evaluate_checkpoint(frozen_run["out"] / "best.pt", workers=1, device="cpu", precision=trained_in)
    val = load_dataset(frozen_run["root"], 0.2, 0).splits["val"]
    assert result["num_images"] == len(val) == 4  # not the 16 images of the whole folder
    assert sum(map(sum, result["confusion"])) == 4
    train_eval = frozen_run["result"]["evaluation"]
    assert result["accuracy"] == pytest.approx(train_eval["accuracy"])
    assert result["loss"] == pytest.approx(train_eval["loss"], rel=1e-4)
    assert [r["class"] for r in result["per_class"]] == ["cat", "dog"]


def test_evaluate_another_folder_without_splits_uses_all_of_it(frozen_run, image_folder):
    other = image_folder(layout="flat", train=3, val=0)
    events = Recorder()
    result = evaluate_checkpoint(frozen_run["out"] / "best.pt", str(other), workers=1, device="cpu", events=events)
    assert result["split"] == "all" and result["num_images"] == 6
    assert any("evaluating all of it" in n for n in events.notes)


def test_predict_rows_in_input_order_with_errors_for_unreadable_files(frozen_run, tmp_path):
    folder = tmp_path / "photos"
    make_image(folder / "b.png", CLASS_COLORS[1])
    make_image(folder / "sub" / "a.jpg", CLASS_COLORS[0])
    (folder / "c.jpg").write_bytes(b"not a jpeg")
    single = make_image(tmp_path / "single.png", CLASS_COLORS[0], (30, 70))
    rows = predict(frozen_run["out"] / "best.pt", [single, folder], top_k=2, workers=1, device="cpu")
    assert [r["path"] for r in rows] == [
        str(single),
        str(folder / "b.png"),
        str(folder / "c.jpg"),
        str(folder / "sub" / "a.jpg"),
    ]
    bad = rows[2]
    assert set(bad) == {"path", "error"} and bad["error"]
    for r in rows[:2] + rows[3:]:
        assert r["label"] in ("cat", "dog") and 0.5 <= r["confidence"] <= 1
        assert r["top"][0]["label"] == r["label"] and len(r["top"]) == 2
        assert sum(t["confidence"] for t in r["top"]) == pytest.approx(1, abs=1e-5)

    with pytest.raises(CatdogError, match="no such file"):
        predict(frozen_run["out"] / "best.pt", [tmp_path / "missing.jpg"], device="cpu")


def test_predict_agrees_with_evaluate(frozen_run):
    """The same model and eval transform: predict's labels on the val images give evaluate's accuracy."""
    val = load_dataset(frozen_run["root"], 0.2, 0).splits["val"]
    rows = predict(frozen_run["out"] / "best.pt", val.paths, workers=1, device="cpu")
    accuracy = sum(r["label"] == ("cat", "dog")[y] for r, y in zip(rows, val.labels)) / len(val)
    assert accuracy == pytest.approx(frozen_run["result"]["evaluation"]["accuracy"])


def test_predictions_csv_never_overwrites(tmp_path):
    rows = [{"path": "a.jpg", "label": "cat", "confidence": 0.9}, {"path": "b.jpg", "error": "empty file"}]
    path = tmp_path / "p.csv"
    write_predictions_csv(path, rows)
    assert list(csv.reader(path.open())) == [
        ["path", "label", "confidence", "error"],
        ["a.jpg", "cat", "0.9", ""],
        ["b.jpg", "", "", "empty file"],
    ]
    with pytest.raises(CatdogError, match="already exists"):
        write_predictions_csv(path, rows)
    assert len(path.read_text().splitlines()) == 3


def test_evaluate_reads_its_split_in_one_threaded_pass(frozen_run, monkeypatch):
    """evaluate decodes per batch in threads while the model computes (nothing held whole): the numbers are the
    training run's, whatever the number of decode threads; it says how fast it went and at what precision."""
    sources = []
    real_evaluate = inference.evaluate_logits
    monkeypatch.setattr(
        inference,
        "evaluate_logits",
        lambda run, source, *a, **k: sources.append(type(source).__name__) or real_evaluate(run, source, *a, **k),
    )
    one = evaluate_checkpoint(frozen_run["out"] / "best.pt", device="cpu", workers=1)
    three = evaluate_checkpoint(frozen_run["out"] / "best.pt", device="cpu", workers=3, batch_size=3)
    assert sources == ["ThreadedSource", "ThreadedSource"]
    trained = frozen_run["result"]["evaluation"]
    for result in (one, three):
        assert result["confusion"] == trained["confusion"]
        assert result["loss"] == pytest.approx(trained["loss"], rel=1e-2)  # batches of 3 or 4: same math
        assert result["precision"] == "fp32" and result["device"] == "cpu"  # inference decides in fp32 at auto
        assert result["seconds"] > 0 and result["images_per_sec"] == pytest.approx(4 / result["seconds"])


def test_predict_reports_throughput_and_precision(frozen_run, tmp_path):
    folder = tmp_path / "photos"
    for i in range(5):
        make_image(folder / f"{i}.png", CLASS_COLORS[i % 2])
    (folder / "broken.jpg").write_bytes(b"")
    result = classify(frozen_run["out"] / "best.pt", [folder], batch_size=2, workers=2, device="cpu", precision="fp32")
    assert (result["kind"], result["backbone"], result["device"], result["precision"]) == (
        "predict",
        "resnet18",
        "cpu",
        "fp32",
    )
    assert result["images_per_sec"] == pytest.approx(6 / result["seconds"])  # every file, read or not
    assert {Path(r["path"]).name: r.get("error") for r in result["predictions"]} == {
        "broken.jpg": "empty file",
        **{f"{i}.png": None for i in range(5)},
    }
    bf16 = classify(frozen_run["out"] / "best.pt", [folder], batch_size=4, device="cpu", precision="bf16")
    assert bf16["precision"] == "bf16"
    assert [r.get("label") for r in bf16["predictions"]] == [r.get("label") for r in result["predictions"]]


# --- evaluate holds a model to the split its run recorded -------------------------------------------------------


@pytest.fixture
def moved_run(frozen_run, tmp_path):
    """frozen_run's data and best.pt, copied so that the test may change the folder the model was trained on."""
    data = tmp_path / "data"
    shutil.copytree(frozen_run["root"], data)
    ckpt = torch.load(frozen_run["out"] / "best.pt", weights_only=True)
    ckpt["data"] = str(data.resolve())
    torch.save(ckpt, tmp_path / "best.pt")
    return data, tmp_path / "best.pt", ckpt


def test_evaluate_counts_the_recorded_val_split_whatever_was_added_or_removed(moved_run):
    data, model, ckpt = moved_run
    val = ckpt["split"]["val"]
    added = [make_image(data / "cat" / f"{name}.png", CLASS_COLORS[0]) for name in ("0a", "3b", "zz")]
    (data / val[0]).unlink()
    # what re-deriving the split from the new file list does: training images counted as val
    rederived = load_dataset(data, 0.2, 0).splits["val"].paths
    assert {p.relative_to(data).as_posix() for p in rederived} & set(ckpt["split"]["train"])

    events = Recorder()
    result = evaluate_checkpoint(model, workers=1, device="cpu", events=events)
    assert result["num_images"] == len(val) - 1
    assert sorted(r["path"] for r in result["left_out"]) == sorted(str(p) for p in added)
    assert result["missing"] == [val[0]]
    assert any(n.startswith("3 file(s) added since the run trained") for n in events.notes)
    assert any(n.startswith(f"1 file(s) of the run's recorded split are gone: {val[0]}") for n in events.notes)
    rows = predict(model, [data / v for v in val[1:]], workers=1, device="cpu")  # the same images, one by one
    right = sum(r["label"] == Path(r["path"]).parent.name for r in rows)
    assert result["accuracy"] == pytest.approx(right / len(rows))


@pytest.mark.parametrize("how", ["copy", "move"])
def test_evaluate_on_the_training_folder_copied_or_moved_keeps_its_recorded_split(moved_run, tmp_path, how):
    """The split is recorded relative to the data root: a copy or a move of the folder (or another machine) is
    matched by what it holds, so its training images never count as val or as a whole folder's "all"."""
    data, model, ckpt = moved_run
    torch.save({**ckpt, "calibration": {"temperature": 2.0, "fitted_on": "val"}}, model)
    elsewhere = tmp_path / "elsewhere" / "data"
    (shutil.copytree if how == "copy" else shutil.move)(data, elsewhere)
    events = Recorder()
    result = evaluate_checkpoint(model, data=str(elsewhere), workers=1, device="cpu", events=events)
    assert result["split"] == "val" and result["num_images"] == len(ckpt["split"]["val"])
    assert any("copied or moved: the split its run recorded applies" in n for n in events.notes)
    assert result["calibration"]["in_sample"]  # the temperature was fitted on these very val images
    if how == "move":  # the checkpoint's own path is gone: --data is how to say where it went
        with pytest.raises(CatdogError, match="no dataset at"):
            evaluate_checkpoint(model, workers=1, device="cpu")


def test_evaluate_names_training_images_copied_into_other_data(moved_run, tmp_path):
    """Less than half the recorded split: other data, evaluated whole, but the training images in it are named."""
    data, model, ckpt = moved_run
    other = tmp_path / "other"
    for rel in ckpt["split"]["train"][:3]:
        (other / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data / rel, other / rel)
    make_image(other / "dog" / "new.png", CLASS_COLORS[1])
    events = Recorder()
    result = evaluate_checkpoint(model, data=str(other), workers=1, device="cpu", events=events)
    assert result["num_images"] == 4
    assert any(
        n.startswith(f"3 file(s) in {other} are at the relative path of one of the model's training images")
        for n in events.notes
    )


def test_a_checkpoint_without_a_recorded_split_says_its_split_is_derived_again(moved_run):
    _, model, ckpt = moved_run
    del ckpt["split"]
    torch.save(ckpt, model)
    events = Recorder()
    evaluate_checkpoint(model, workers=1, device="cpu", events=events)
    assert any("records no split" in n for n in events.notes)


def test_unsure_rows_keep_their_label_and_sort_into_their_own_folder(frozen_run, tmp_path):
    val = load_dataset(frozen_run["root"], 0.2, 0).splits["val"]
    plain = predict(frozen_run["out"] / "best.pt", val.paths, workers=1, device="cpu")
    threshold = sorted(r["confidence"] for r in plain)[len(plain) // 2]  # about half below it
    rows = predict(frozen_run["out"] / "best.pt", val.paths, workers=1, device="cpu", min_confidence=threshold)
    assert [r["label"] for r in rows] == [r["label"] for r in plain]
    assert [r["unsure"] for r in rows] == [r["confidence"] < threshold for r in plain]
    assert 0 < sum(r["unsure"] for r in rows) < len(rows)

    assert sort_into_folders(rows, tmp_path / "sorted") == len(rows)
    for r in rows:
        where = tmp_path / "sorted" / ("_unsure/" if r["unsure"] else "") / r["label"]
        assert Path(r["copied_to"]).parent == where


def test_a_class_named_like_the_unsure_folder_is_refused(tmp_path):
    rows = [
        {
            "path": str(make_image(tmp_path / "a.png", CLASS_COLORS[0])),
            "label": "_unsure",
            "confidence": 0.4,
            "unsure": True,
        }
    ]
    with pytest.raises(CatdogError, match="a class is named _unsure"):
        sort_into_folders(rows, tmp_path / "sorted")
    assert not (tmp_path / "sorted").exists()


def test_predictions_csv_with_unsure_and_top_k_columns(tmp_path):
    rows = [
        {
            "path": "a.jpg",
            "label": "cat",
            "confidence": 0.6,
            "unsure": True,
            "top": [
                {"label": "cat", "confidence": 0.6},
                {"label": "dog", "confidence": 0.3},
                {"label": "fox", "confidence": 0.1},
            ],
        },
        {"path": "b.jpg", "error": "empty file"},
    ]
    write_predictions_csv(tmp_path / "p.csv", rows)
    assert list(csv.reader((tmp_path / "p.csv").open())) == [
        ["path", "label", "confidence", "unsure", "label_2", "confidence_2", "label_3", "confidence_3", "error"],
        ["a.jpg", "cat", "0.6", "True", "dog", "0.3", "fox", "0.1", ""],
        ["b.jpg", "", "", "", "", "", "", "", "empty file"],
    ]


def test_predict_and_evaluate_apply_the_checkpoints_temperature(frozen_run, tmp_path):
    """softmax(logits / T): for two classes the log-odds shrink by T; labels and accuracy do not change."""
    hot = tmp_path / "best.pt"
    shutil.copy(frozen_run["out"] / "best.pt", hot)
    checkpoints.update(hot, calibration={"temperature": 2.0, "fitted_on": "val"})
    val = load_dataset(frozen_run["root"], 0.2, 0).splits["val"]
    plain = predict(frozen_run["out"] / "best.pt", val.paths, workers=1, device="cpu")
    calibrated = predict(hot, val.paths, workers=1, device="cpu")
    for p, c in zip(plain, calibrated):
        assert c["label"] == p["label"]
        assert math.log(c["confidence"] / (1 - c["confidence"])) == pytest.approx(
            math.log(p["confidence"] / (1 - p["confidence"])) / 2, rel=1e-3
        )

    result = evaluate_checkpoint(hot, workers=1, device="cpu", min_confidence=0.55)
    cal = result["calibration"]
    assert cal["temperature"] == 2.0 and cal["split"] == "val" and cal["in_sample"]
    sure = [(c["label"] == ("cat", "dog")[y]) for c, y in zip(calibrated, val.labels) if c["confidence"] >= 0.55]
    assert result["selective"]["images"] == len(sure)
    assert result["selective"]["coverage"] == len(sure) / len(val)
    assert result["selective"]["accuracy"] == (sum(sure) / len(sure) if sure else None)
    assert result["accuracy"] == frozen_run["result"]["evaluation"]["accuracy"]


def test_a_split_the_data_lacks_is_refused_before_the_model_is_built(frozen_run, monkeypatch):
    """`evaluate --split test` on data without test/ was refused only after the model had loaded (12 s)."""
    from catdog_cli.inference.trained import TrainedModel

    monkeypatch.setattr(TrainedModel, "from_checkpoint", pytest.fail)
    with pytest.raises(CatdogError, match=r"has no 'test' split \(it has: train, val\)"):
        evaluate_checkpoint(frozen_run["out"] / "best.pt", split="test", device="cpu")


# --- issue 25, class 9: nothing left out without a word --------------------------------------------------------


def _deny_listing(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """os.scandir of `folder` fails as it does for a folder the user may not read (root reads anything)."""
    real = os.scandir

    def scandir(path=".", *args):
        if Path(path) == folder:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, *args)

    monkeypatch.setattr(os, "scandir", scandir)


def test_a_fifo_and_an_unreadable_sub_folder_are_rows_with_their_reason(frozen_run, tmp_path, monkeypatch):
    """Both were missing from predict's rows without a word; they are rows like an unreadable file's."""
    folder = tmp_path / "photos"
    make_image(folder / "a.png", CLASS_COLORS[0])
    make_image(folder / "locked" / "b.png", CLASS_COLORS[1])
    make_image(folder / "z.png", CLASS_COLORS[1])
    os.mkfifo(folder / "pipe.jpg")
    os.mkfifo(folder / "pipe")  # not named like an image: not a photo left out
    _deny_listing(monkeypatch, folder / "locked")
    rows = predict(frozen_run["out"] / "best.pt", [folder], workers=1, device="cpu")
    assert [(Path(r["path"]).name, r.get("error")) for r in rows] == [
        ("a.png", None),
        ("locked", "cannot read (Permission denied)"),
        ("pipe.jpg", "not a regular file (a FIFO, device or socket is never read)"),
        ("z.png", None),
    ]
    assert all(r["label"] in ("cat", "dog") for r in rows if "error" not in r)


def test_a_folder_with_nothing_readable_names_what_it_left_out(frozen_run, tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    make_image(folder / "locked" / "b.png", CLASS_COLORS[1])
    _deny_listing(monkeypatch, folder / "locked")
    with pytest.raises(CatdogError, match=rf"^no images to classify in {folder}; {folder / 'locked'}: cannot read"):
        predict(frozen_run["out"] / "best.pt", [folder], workers=1, device="cpu")


def test_a_class_without_images_in_the_split_has_no_recall_not_zero(frozen_run, image_folder, tmp_path):
    """'dog 0.0 %' read as a model that misses every dog; with no dog to find there is no recall at all."""
    cats = image_folder(layout="flat", classes=("cat",), train=4, val=0)
    report = tmp_path / "r.html"
    best = frozen_run["out"] / "best.pt"
    found = ok_json(catdog("evaluate", best, "--data", cats, "--device", "cpu", "--json", "--report", report))
    dog = found["per_class"][1]
    assert (dog["class"], dog["support"], dog["recall"], dog["f1"]) == ("dog", 0, None, None)
    assert dog["undefined"].startswith("no image of this class in the data (recall)")
    shown = catdog("evaluate", best, "--data", cats, "--device", "cpu")
    assert shown.exit_code == 0, shown.output
    dog_row = next(line for line in shown.stdout.splitlines() if re.search(r"[│┃|] dog ", line))
    assert [c.strip() for c in re.split(r"[│┃|]", dog_row)][3] == "—"  # the recall column: not 0.0%
    assert "— dog: no image of this class in the data (recall)" in " ".join(shown.stdout.split())
    page = report.read_text(encoding="utf-8")
    assert "dog: no image of this class in the data (recall)" in page


def test_a_csv_gets_the_mode_open_would_give_new_or_replaced(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = tmp_path / "p.csv"
    for overwrite in (False, True):
        write_predictions_csv(path, [{"path": "a.jpg", "label": "cat", "confidence": 0.9}], overwrite=overwrite)
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def _rows(tmp_path: Path, **marks: bool) -> list[dict]:
    return [{"path": str(make_image(tmp_path / "in" / "a.png", CLASS_COLORS[0])), "label": "cat", **marks}]


@pytest.mark.parametrize(
    ("there", "marks", "label"),
    [
        ("_unsure/photo.png", {"unsure": True}, "cat"),  # a class named _unsure, and unsure copies into it
        ("_unsure/cat/photo.png", {}, "_unsure"),  # catdog's unsure folder, and a class named _unsure into it
        ("_unknown/kind/photo.png", {"unknown": True}, "cat"),  # not catdog's unknown folder (images only)
    ],
)
def test_sort_into_a_folder_whose_special_folder_means_something_else_is_refused(tmp_path, there, marks, label):
    dest = tmp_path / "sorted"
    make_image(dest / there, CLASS_COLORS[2])
    before = snapshot(dest)
    rows = [{**r, "label": label} for r in _rows(tmp_path, **marks)]
    with pytest.raises(CatdogError, match=r"^--sort-into: .* already holds .*would mix two meanings"):
        sort_into_folders(rows, dest)
    assert snapshot(dest) == before


def test_sorting_again_into_a_folder_catdog_sorted_into_is_fine(tmp_path):
    dest = tmp_path / "sorted"
    for marks in ({"unsure": True}, {"unknown": True}, {}):
        assert sort_into_folders(_rows(tmp_path, **marks), dest) == 1
        assert sort_into_folders(_rows(tmp_path, **marks), dest) == 1  # a second time: a -1 name beside it
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.png")) == [
        "_unknown/a-1.png",
        "_unknown/a.png",
        "_unsure/cat/a-1.png",
        "_unsure/cat/a.png",
        "cat/a-1.png",
        "cat/a.png",
    ]


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_evaluate_and_predict_check_once_and_find_their_data_once(frozen_run, monkeypatch, command):
    """The CLI checks before torch loads and hands the checked model on (evaluate_checkpoint and classify check
    nothing again); evaluate's --data is looked up once, not by the CLI, the check and the dataset each."""
    from helpers import catdog

    from catdog_cli.core import validate as validate_module
    from catdog_cli.data import dataset as dataset_module
    from catdog_cli.inference import predict as predict_module

    checks, resolved = [], []
    real_check, real_resolve = validate_module.check_use, validate_module.resolve_data
    for module in (validate_module, inference, predict_module):
        monkeypatch.setattr(module, "check_use", lambda *a, **k: checks.append(a) or real_check(*a, **k))
    for module in (validate_module, dataset_module, inference):
        monkeypatch.setattr(module, "resolve_data", lambda data: resolved.append(data) or real_resolve(data))
    best, root = frozen_run["out"] / "best.pt", frozen_run["root"]
    where = ["--data", root] if command == "evaluate" else [root / "cat"]
    done = catdog(command, best, *where, "--device", "cpu", "--json")
    assert done.exit_code == 0, done.output
    assert (len(checks), resolved) == (1, [str(root)] if command == "evaluate" else [])
    checks.clear(), resolved.clear()
    if command == "evaluate":  # from Python: checked there, once
        evaluate_checkpoint(best, str(root), device="cpu")
        assert (len(checks), resolved) == (1, [str(root)])
