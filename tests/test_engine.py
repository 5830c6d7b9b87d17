"""The engine from Python: fit -> checkpoints and run record; evaluate and predict from a checkpoint."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import CLASS_COLORS, make_image

from catdog_cli import checkpoints, engine
from catdog_cli.backbones import TORCHVISION, build_model
from catdog_cli.data import load_dataset
from catdog_cli.engine import (
    Events,
    Inputs,
    TrainConfig,
    evaluate_checkpoint,
    fit,
    predict,
    start_run,
    write_predictions_csv,
)
from catdog_cli.errors import CatdogError
from catdog_cli.metrics import confusion_matrix, per_class

TINY = {"backbone": "resnet18", "image_size": 32, "batch_size": 4, "device": "cpu", "workers": 1}


class Recorder(Events):
    def __init__(self):
        self.notes, self.epochs = [], []

    def note(self, text):
        self.notes.append(text)

    def epoch(self, record):
        self.epochs.append(record)


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory):
    """A freeze run from a state dict the test wrote (flat folder: 8 images per class, 2 of them val)."""
    tmp = tmp_path_factory.mktemp("engine")
    root = tmp / "data"
    for k, cls in enumerate(("cat", "dog")):
        for i in range(8):
            make_image(root / cls / f"{i}.png", CLASS_COLORS[k], ((48, 36), (36, 48))[i % 2], shade=i * 4)
    torch.manual_seed(3)
    state = TORCHVISION["resnet18"].build_full().state_dict()
    weights = tmp / "resnet18.pth"
    torch.save(state, weights)
    events = Recorder()
    config = TrainConfig(str(root), strategy="freeze", epochs=2, weights=str(weights), **TINY)
    result = fit(config, tmp / "run", events)
    return {"root": root, "out": tmp / "run", "state": state, "result": result, "events": events, "tmp": tmp}


def test_fit_writes_checkpoints_metrics_and_run_record(frozen_run):
    out, result = frozen_run["out"], frozen_run["result"]
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "last.pt", "metrics.csv", "report.html", "run.json"]
    assert result["report"] == str(out / "report.html")
    assert result["epochs"] == 2 and result["out"] == str(out) and 0 <= result["best_val_acc"] <= 1
    assert (result["config"]["lr"], result["config"]["image_size"]) == (1e-3, 32)  # what ran, not "default"
    assert json.loads((out / "run.json").read_text()) == json.loads(json.dumps(result))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"} <= set(rows[0])
    assert [e["epoch"] for e in frozen_run["events"].epochs] == [1, 2]
    assert result["best_val_acc"] == max(float(r["val_acc"]) for r in rows)


def test_checkpoint_holds_what_is_needed_to_use_the_model(frozen_run):
    best = checkpoints.load(frozen_run["out"] / "best.pt")
    assert best["backbone"] == "resnet18" and best["classes"] == ["cat", "dog"] and best["strategy"] == "freeze"
    assert (best["image_size"], best["resize"]) == (32, 37)
    assert best["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert "optimizer" not in best
    last = checkpoints.load(frozen_run["out"] / "last.pt")
    assert "optimizer" in last and last["state"]["epoch"] == 2


def test_freeze_run_leaves_the_given_backbone_untouched(frozen_run):
    """End to end: the frozen backbone in last.pt is exactly the user's state dict, BN statistics included."""
    saved = checkpoints.load(frozen_run["out"] / "last.pt")["state_dict"]
    given = frozen_run["state"]
    features = {k.removeprefix("features."): v for k, v in saved.items() if k.startswith("features.")}
    assert set(features) == {k for k in given if not k.startswith("fc.")}
    assert all(torch.equal(features[k], given[k]) for k in features)
    untrained_head = build_model("resnet18", 2, weights="none", seed=0).head
    assert not torch.equal(saved["head.weight"], untrained_head.weight)
    assert frozen_run["result"]["params"]["trainable"] == 512 * 2 + 2


@pytest.mark.parametrize("augment", [False, True])
def test_freeze_without_augmentation_runs_the_backbone_once(image_folder, tmp_path, monkeypatch, augment):
    seen: list[int] = []
    real_build = engine.build_model

    def counting_build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.features.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
        return model

    monkeypatch.setattr(engine, "build_model", counting_build)
    root = image_folder(train=8, val=2)  # 16 training images (4 full batches), 4 val images
    result = fit(TrainConfig(str(root), strategy="freeze", epochs=3, weights="none", augment=augment, **TINY),
                 tmp_path / "run")
    train_images = 3 * 16 if augment else 16  # new crops every epoch, or the same pixels: features once
    assert sum(seen) == train_images + 4 * (3 + 1)  # + val every epoch and the best weights once more
    assert len(result["history"]) == 3 and all(h["images_per_sec"] > 0 for h in result["history"])


def test_evaluate_rederives_the_val_split_of_the_training_folder(frozen_run):
    result = evaluate_checkpoint(frozen_run["out"] / "best.pt", workers=1, device="cpu")
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
    assert [r["path"] for r in rows] == [str(single), str(folder / "b.png"), str(folder / "c.jpg"),
                                         str(folder / "sub" / "a.jpg")]
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
    assert list(csv.reader(path.open())) == [["path", "label", "confidence", "error"], ["a.jpg", "cat", "0.9", ""],
                                             ["b.jpg", "", "", "empty file"]]
    with pytest.raises(CatdogError, match="already exists"):
        write_predictions_csv(path, rows)
    assert len(path.read_text().splitlines()) == 3


def test_unreadable_training_image_is_skipped_and_named(image_folder, tmp_path):
    root = image_folder(train=4, val=2)
    broken = root / "train" / "cat" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 garbage")
    events = Recorder()
    result = fit(TrainConfig(str(root), epochs=1, weights="none", **TINY), tmp_path / "run", events)
    assert [s["path"] for s in result["skipped"]] == [str(broken)]
    assert any(str(broken) in n and n.startswith("skipped") for n in events.notes)
    assert result["epochs"] == 1


def test_discriminative_lr_and_ratio_reach_the_optimizer(image_folder):
    config = TrainConfig(str(image_folder(train=2, val=1)), strategy="discriminative", lr=0.01, lr_ratio=5,
                         epochs=1, weights="none", **TINY)
    run = start_run(config, Events())
    lrs = {g["name"]: g["initial_lr"] for g in run.optimizer.param_groups}
    assert lrs == {"backbone": pytest.approx(0.002), "head": pytest.approx(0.01)}


def test_inputs_follow_the_backbone_and_image_size():
    inputs = Inputs.for_backbone("resnet18", 64)
    assert (inputs.image_size, inputs.resize) == (64, 73)
    assert Inputs.for_backbone("resnet18", None).image_size == 224
    assert inputs.eval_spec().crop == 64 and inputs.train_spec(True).train and not inputs.train_spec(False).train


@pytest.mark.parametrize(("field", "value", "match"), [("epochs", 0, "epochs"), ("batch_size", -1, "batch-size"),
                                                        ("device", "tpu", "device"), ("strategy", "thaw", "strategy")])
def test_bad_config_is_a_catdog_error(image_folder, field, value, match):
    config = TrainConfig(str(image_folder(train=2, val=1)), weights="none", **{**TINY, field: value})
    with pytest.raises(CatdogError, match=match):
        start_run(config, Events())


def test_metrics_from_the_confusion_matrix():
    labels, preds = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 1, 1, 0, 2])
    confusion = confusion_matrix(labels, preds, 3).tolist()
    assert confusion == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    rows = {r["class"]: r for r in per_class(confusion, ["a", "b", "c"])}
    assert rows["a"]["precision"] == pytest.approx(0.5) and rows["a"]["recall"] == pytest.approx(0.5)
    assert rows["b"]["precision"] == pytest.approx(2 / 3) and rows["b"]["recall"] == 1.0
    assert rows["b"]["f1"] == pytest.approx(0.8)
    assert rows["c"]["support"] == 2


def test_evaluate_streams_a_split_over_the_memory_budget(frozen_run, monkeypatch):
    """evaluate uses the training pipeline's sources: over the budget it decodes per batch, same numbers."""
    resident = evaluate_checkpoint(frozen_run["out"] / "best.pt", str(frozen_run["root"]), device="cpu", workers=1)
    monkeypatch.setattr(engine, "memory_budget", lambda device, gib=None: 1)
    sources = []
    real_evaluate = engine.evaluate
    monkeypatch.setattr(engine, "evaluate", lambda model, source, *a, **k: sources.append(type(source).__name__)
                        or real_evaluate(model, source, *a, **k))
    streamed = evaluate_checkpoint(frozen_run["out"] / "best.pt", str(frozen_run["root"]), device="cpu", workers=0)
    assert sources == ["StreamingSource"]
    assert streamed["num_images"] == resident["num_images"]
    assert streamed["confusion"] == resident["confusion"]
    assert streamed["loss"] == pytest.approx(resident["loss"], abs=1e-5)
