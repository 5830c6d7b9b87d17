"""The unknown-image detector (inference/ood.py): fitting, a threshold set on in-distribution images alone, the
checkpoint round trip, predict's `unknown` and `_unknown/`, evaluate's --unknown-data, the export's score, and a
checkpoint without one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers import CLASS_COLORS, Recorder, make_image

from catdog_cli.core.defaults import OOD_METHODS
from catdog_cli.errors import CatdogError
from catdog_cli.inference import ood
from catdog_cli.inference.evaluate import evaluate_checkpoint
from catdog_cli.inference.export import export_model, read_metadata
from catdog_cli.inference.predict import UNKNOWN, UNSURE, classify, predict, sort_into_folders
from catdog_cli.inference.trained import TrainedModel
from catdog_cli.models import checkpoints


def clusters(seed: int, n: int = 200, d: int = 16) -> dict[str, torch.Tensor]:
    """Two known classes as Gaussian clusters, val drawn like train, and unknown images far from both."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.zeros(2, d)
    centres[0, 0], centres[1, 1] = 4.0, 4.0
    labels = torch.arange(n) % 2
    val_labels = torch.arange(n // 2) % 2
    far = torch.zeros(d)
    far[2] = 12.0
    return {
        "train": centres[labels] + torch.randn(n, d, generator=g),
        "labels": labels,
        "val": centres[val_labels] + torch.randn(n // 2, d, generator=g),
        "unknown": far + torch.randn(n // 2, d, generator=g),
    }


def linear_head(d: int = 16) -> torch.nn.Linear:
    head = torch.nn.Linear(d, 2)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[0, 0], head.weight[1, 1] = 1.0, 1.0
        head.bias.zero_()
    return head


@pytest.mark.parametrize("method", ["mahalanobis", "knn", "vim"])
def test_feature_detectors_separate_far_images_and_keep_val(method):
    data, head = clusters(0), linear_head()
    with torch.no_grad():
        detector = ood.fit(method, (data["train"], data["labels"]), (data["val"], head(data["val"])), 2, head)
        known = detector(data["val"], head(data["val"]))
        unknown = detector(data["unknown"], head(data["unknown"]))
    assert (known <= detector.threshold).double().mean() >= 0.95  # the threshold keeps 95 % of val
    measured = ood.separation(known, unknown, detector.threshold)
    assert measured["auroc"] > 0.99 and measured["caught"] > 0.95
    assert detector.record["fitted_on"] == {"train": 200, "val": 100} and detector.record["method"] == method


def test_the_threshold_comes_from_val_alone():
    """The keep-quantile of the val scores: the smallest score that keeps `keep` of them, whatever unknown
    images exist (fit never sees them)."""
    scores = torch.arange(1.0, 21.0)  # 1..20
    assert ood.threshold_for(scores, 0.95) == 19.0 and ood.threshold_for(scores, 1.0) == 20.0
    assert ood.threshold_for(scores, 0.5) == 10.0
    data, head = clusters(1), linear_head()
    a = ood.fit("knn", (data["train"], data["labels"]), (data["val"], head(data["val"]).detach()), 2, keep=0.9)
    with torch.no_grad():
        assert a.threshold == ood.threshold_for(a(data["val"], head(data["val"])), 0.9)
    with pytest.raises(CatdogError, match="--ood-keep"):
        ood.threshold_for(scores, 0.0)


def test_auroc_counts_ties_half():
    assert ood.auroc(torch.tensor([0.0, 1.0, 1.0]), torch.tensor([1.0, 2.0])) == pytest.approx(5 / 6)
    assert ood.auroc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 1.0


@pytest.mark.parametrize("method", OOD_METHODS)
def test_every_detector_survives_the_checkpoint(method, tmp_path):
    data, head = clusters(2), linear_head()
    with torch.no_grad():
        detector = ood.fit(method, (data["train"], data["labels"]), (data["val"], head(data["val"])), 2, head)
        path = tmp_path / "entry.pt"
        torch.save({"ood": detector.checkpoint_entry()}, path)
        back = ood.from_checkpoint(torch.load(path, weights_only=True))  # what checkpoints.load does
        logits = head(data["unknown"])
        assert back.method == method and back.threshold == detector.threshold
        assert torch.equal(back(data["unknown"], logits), detector(data["unknown"], logits))
    assert "scores" not in detector.checkpoint_entry()  # the report's val scores stay out of best.pt


def test_a_damaged_detector_is_refused_in_one_line():
    with pytest.raises(CatdogError, match="detector is damaged"):
        ood.from_checkpoint({"ood": {"method": "knn", "threshold": 0.1, "tensors": {}}})
    with pytest.raises(CatdogError, match="detector is damaged"):
        ood.from_checkpoint({"ood": {"method": "magic", "threshold": 0.1, "tensors": {}}})
    assert ood.from_checkpoint({}) is None


def test_a_train_run_fits_one_on_its_best_weights(frozen_run):
    """best.pt carries the default detector, fitted on train, thresholded on val; run.json says so."""
    ckpt = checkpoints.load(frozen_run["out"] / "best.pt")
    record = frozen_run["result"]["ood"]
    assert ckpt["ood"]["method"] == "knn" and ckpt["ood"]["fitted_on"] == {"train": 12, "val": 4}
    assert ckpt["ood"]["threshold"] == record["threshold"] and len(record["scores"]["val"]) == 4
    assert ckpt["ood"]["tensors"]["bank"].shape[0] == 12 and ckpt["ood"]["k"] == ood.KNN_K
    report = (frozen_run["out"] / "report.html").read_text()
    assert "Images of neither class" in report and "unknown-scores" in report


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Images of both classes' colors, and green ones of neither."""
    root = tmp_path_factory.mktemp("photos")
    for i in range(3):
        make_image(root / f"cat{i}.png", CLASS_COLORS[0], (40, 40 + i))
        make_image(root / f"green{i}.png", CLASS_COLORS[2], (40 + i, 40))
    return root


def test_predict_marks_unknown_images_and_sorts_them_apart(frozen_run, photos, tmp_path):
    best = frozen_run["out"] / "best.pt"
    trained = TrainedModel.load(best, "cpu")
    rows = predict(best, [photos], device="cpu", workers=1, min_confidence=0.99)
    assert all(r["unknown"] == (r["unknown_score"] > trained.detector.threshold) for r in rows)
    # the score is the checkpoint detector's on the model's features, one image at a time or in a batch
    with torch.no_grad(), trained.scored() as tap:
        trained.model(torch.zeros(1, 3, 32, 32))
    assert tap.take_scores().shape == (1,)
    # routing: unknown wins over unsure; unsure keeps its class folder; both distinct from the classes
    rows = [
        {"path": str(photos / "green0.png"), "label": "cat", "unknown": True, "unsure": True},
        {"path": str(photos / "cat0.png"), "label": "cat", "unknown": False, "unsure": True},
        {"path": str(photos / "cat1.png"), "label": "cat", "unknown": False, "unsure": False},
    ]
    assert sort_into_folders(rows, tmp_path / "sorted") == 3
    assert [Path(r["copied_to"]).parent.relative_to(tmp_path / "sorted").as_posix() for r in rows] == [
        UNKNOWN,
        f"{UNSURE}/cat",
        "cat",
    ]
    with pytest.raises(CatdogError, match="a class is named _unknown"):
        sort_into_folders([{**rows[0], "label": UNKNOWN}], tmp_path / "other")


def test_unknown_scores_are_the_centre_view_under_tta(frozen_run, tmp_path):
    """Square images: TTA's centre view is then the very crop predict sees without it."""
    squares = [make_image(tmp_path / f"{i}.png", CLASS_COLORS[i], (40, 40), shade=i) for i in range(3)]
    best = frozen_run["out"] / "best.pt"
    plain = predict(best, squares, device="cpu", workers=1, precision="fp32")
    tta = predict(best, squares, device="cpu", workers=1, precision="fp32", tta="flip+crops")
    assert [r["unknown_score"] for r in tta] == pytest.approx([r["unknown_score"] for r in plain], abs=1e-6)


def test_without_a_detector_predict_says_so_once_and_predicts_as_before(frozen_run, photos, tmp_path):
    best = frozen_run["out"] / "best.pt"
    old = tmp_path / "old.pt"
    shutil.copy(best, old)
    checkpoints.update(old, ood=None)  # as a checkpoint written before catdog fitted detectors
    events = Recorder()
    before = classify(old, [photos], device="cpu", workers=1, events=events)["predictions"]
    assert events.notes == [ood.NO_DETECTOR]
    off = predict(best, [photos], device="cpu", workers=1, unknown=False)  # the switch: as before, too
    assert [(r["label"], r["confidence"]) for r in before] == [(r["label"], r["confidence"]) for r in off]
    assert not any("unknown" in r for r in before + off)
    with pytest.raises(CatdogError, match="--unknown-data needs a detector"):
        evaluate_checkpoint(old, device="cpu", workers=1, unknown_data=photos)


def test_evaluate_measures_the_detector_on_unknown_data(frozen_run, photos, tmp_path):
    result = evaluate_checkpoint(
        frozen_run["out"] / "best.pt", device="cpu", workers=1, unknown_data=photos, report=tmp_path / "r.html"
    )
    found = result["unknown"]
    assert found["unknown_images"] == 6 and len(found["scores"]["unknown data"]) == 6
    assert 0 <= found["auroc"] <= 1 and 0 <= found["caught"] <= 1 and 0 <= found["fpr_at_95_kept"] <= 1
    assert len(found["caught_examples"]) + len(found["missed_examples"]) == 6
    assert found["kept"] == (torch.tensor(found["scores"]["val"]) <= found["threshold"]).double().mean().item()
    assert "Images of neither class" in (tmp_path / "r.html").read_text()


def test_the_export_computes_the_score_in_graph(frozen_run, tmp_path):
    result = export_model(frozen_run["out"] / "best.pt", "torchscript", tmp_path / "m.torchscript")
    parity = result["parity"]
    assert parity["passed"] and parity["unknown_score_diff"] <= 1e-4
    meta = read_metadata(result["out"])
    assert meta["unknown"]["output"] == "unknown_score" and meta["unknown"]["method"] == "knn"
    assert meta["unknown"]["threshold"] == checkpoints.load(frozen_run["out"] / "best.pt")["ood"]["threshold"]


def test_export_parity_covers_the_score(frozen_run, tmp_path, monkeypatch):
    from catdog_cli.inference import contract

    real = contract.Exportable.forward
    monkeypatch.setattr(contract.Exportable, "forward", lambda self, x: (real(self, x)[0], real(self, x)[1] + 1))
    with pytest.raises(CatdogError, match=r"unknown scores differ by 1\.00e"):
        export_model(frozen_run["out"] / "best.pt", "torchscript", tmp_path / "m.torchscript")
    assert list(tmp_path.iterdir()) == []
