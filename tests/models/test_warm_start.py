"""`train --weights runs/x/best.pt`: a new run from a catdog checkpoint, with the same or with other classes."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY, Recorder, catdog, error_line, labeled_folder, ok_json

from catdog_cli.core.config import TrainConfig
from catdog_cli.errors import CatdogError
from catdog_cli.models import checkpoints, warm_start
from catdog_cli.training.loop import fit


def features_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith("features.")}


def test_same_classes_carry_the_whole_model_over(frozen_run):
    best = frozen_run["out"] / "best.pt"
    saved = checkpoints.load(best)["state_dict"]
    events = Recorder()
    model = warm_start.from_checkpoint(best, "resnet18", ["cat", "dog"], torch.device("cpu"), 0, events)
    state = model.state_dict()
    assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)
    assert events.notes == []


def test_other_classes_keep_the_backbone_and_get_a_new_head(frozen_run):
    best = frozen_run["out"] / "best.pt"
    saved = checkpoints.load(best)["state_dict"]
    events = Recorder()
    model = warm_start.from_checkpoint(best, "resnet18", ["ant", "bee", "wasp"], torch.device("cpu"), 0, events)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in features_of(saved).items())
    assert state["head.weight"].shape == (3, 512) and not state["head.weight"].is_meta
    assert events.notes == [
        f"{best} was trained on cat, dog; this data has ant, bee, wasp: its backbone carries over, the head is new"
    ]


@pytest.mark.parametrize("classes", [["cat", "dog"], ["ant", "bee", "wasp"]], ids=["same classes", "other classes"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_a_warm_start_converts_weights_stored_in_another_precision(frozen_run, tmp_path, classes, dtype):
    """Every load path converts, the warm start on other classes too (an fp16 file 'diverged'; fp64 a traceback)."""
    ckpt = checkpoints.load(frozen_run["out"] / "best.pt")
    stored = {k: v.to(dtype) if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    torch.save({**ckpt, "state_dict": stored}, tmp_path / "half.pt")
    model = warm_start.from_checkpoint(tmp_path / "half.pt", "resnet18", classes, torch.device("cpu"), 0, Recorder())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    state = model.state_dict()
    for k, v in features_of(stored).items():
        torch.testing.assert_close(state[k], v.to(state[k].dtype))


@pytest.mark.parametrize("classes", [["cat", "dog"], ["ant", "bee", "wasp"]], ids=["same classes", "other classes"])
def test_a_warm_start_refuses_weights_that_are_not_finite(frozen_run, tmp_path, classes):
    ckpt = checkpoints.load(frozen_run["out"] / "best.pt")
    stored = dict(ckpt["state_dict"])
    stored["features.conv1.weight"] = stored["features.conv1.weight"].clone().fill_(float("nan"))
    torch.save({**ckpt, "state_dict": stored}, tmp_path / "nan.pt")
    with pytest.raises(CatdogError, match=r"not finite \(NaN or infinity in features\.conv1\.weight\)"):
        warm_start.from_checkpoint(tmp_path / "nan.pt", "resnet18", classes, torch.device("cpu"), 0, Recorder())


def test_a_warm_start_whose_backbone_weights_do_not_fit_says_which(frozen_run, tmp_path):
    ckpt = checkpoints.load(frozen_run["out"] / "best.pt")
    stored = dict(ckpt["state_dict"])
    stored["features.conv1.weight"] = torch.zeros(3, 3)
    torch.save({**ckpt, "state_dict": stored}, tmp_path / "odd.pt")
    with pytest.raises(CatdogError) as caught:
        warm_start.from_checkpoint(tmp_path / "odd.pt", "resnet18", ["a", "b", "c"], torch.device("cpu"), 0, Recorder())
    assert "conv1.weight" in str(caught.value) and "\n" not in str(caught.value)


def test_catdog_checkpoints_are_told_from_state_dicts(frozen_run):
    assert warm_start.is_catdog_checkpoint(str(frozen_run["out"] / "best.pt"))
    assert not warm_start.is_catdog_checkpoint(str(frozen_run["tmp"] / "resnet18.pth"))  # a plain state dict
    assert not warm_start.is_catdog_checkpoint("default")


def test_train_from_a_checkpoint_on_other_classes(frozen_run, tmp_path):
    """What failed with '245 missing and 296 unexpected keys': a freeze run on new classes keeps the backbone."""
    data = labeled_folder(tmp_path / "data", classes=("ant", "bee", "wasp"), per_class=4)
    best = frozen_run["out"] / "best.pt"
    result = catdog(
        "train",
        "--data",
        data,
        "--weights",
        best,
        "--backbone",
        "resnet18",
        "--strategy",
        "freeze",
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--out",
        tmp_path / "run",
        "--json",
    )
    run = ok_json(result)
    assert run["classes"] == ["ant", "bee", "wasp"] and run["config"]["weights"] == str(best)
    assert "its backbone carries over, the head is new" in " ".join(result.stderr.split())
    trained = checkpoints.load(tmp_path / "run" / "last.pt")["state_dict"]
    assert all(torch.equal(trained[k], v) for k, v in features_of(checkpoints.load(best)["state_dict"]).items())


def test_a_checkpoint_of_another_backbone_is_refused(frozen_run, tmp_path):
    data = labeled_folder(tmp_path / "data", per_class=4)
    line = error_line(
        catdog(
            "train",
            "--data",
            data,
            "--weights",
            frozen_run["out"] / "best.pt",
            "--backbone",
            "resnet34",
            "--image-size",
            "32",
            "--device",
            "cpu",
            "--out",
            tmp_path / "run",
        )
    )
    assert line == (
        f"error: {frozen_run['out'] / 'best.pt'} holds a resnet18 model, not resnet34: add --backbone "
        "resnet18 to train from it"
    )


def test_fit_from_a_checkpoint_on_the_same_classes(frozen_run, tmp_path):
    """Same classes: the head starts as the checkpoint's too (at a learning rate of ~0 it stays there, with the
    checkpoint's val accuracy)."""
    best = frozen_run["out"] / "best.pt"
    config = TrainConfig(str(frozen_run["root"]), strategy="freeze", epochs=1, lr=1e-12, weights=str(best), **TINY)
    result = fit(config, tmp_path / "run")
    head = checkpoints.load(tmp_path / "run" / "last.pt")["state_dict"]["head.weight"]
    assert torch.allclose(head, checkpoints.load(best)["state_dict"]["head.weight"], atol=1e-6)
    assert result["evaluation"]["accuracy"] == frozen_run["result"]["evaluation"]["accuracy"]
