"""Checkpoints: weights_only loading, code payloads refused, restore without any download."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision

from catdog_cli.errors import CatdogError
from catdog_cli.models import checkpoints
from catdog_cli.models.backbones import build_model

META = {
    "backbone": "resnet18",
    "classes": ["ants", "bees"],
    "image_size": 32,
    "resize": 37,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "strategy": "freeze",
    "metrics": {"acc": 0.5},
}


@pytest.fixture(scope="module")
def model():
    return build_model("resnet18", 2, weights="none", seed=0).eval()


class CodePayload:
    """Unpickling this runs a shell command: exactly what weights_only loading must refuse."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo pwned > {self.marker}",)


def test_save_then_load_with_weights_only(tmp_path, model):
    path = tmp_path / "best.pt"
    checkpoints.save(path, model, META)
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]
    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain data: no pickled code needed
    assert raw["format"] == checkpoints.FORMAT and raw["classes"] == ["ants", "bees"]
    assert raw["versions"]["torch"] == str(torch.__version__)
    assert raw["versions"]["torchvision"] == str(torchvision.__version__)
    ckpt = checkpoints.load(path)
    assert {k: ckpt[k] for k in META} == META
    assert set(ckpt["state_dict"]) == set(model.state_dict())


def test_code_payload_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoints.FORMAT, "backbone": "resnet18", "x": CodePayload(marker)}, path)
    with pytest.raises(CatdogError) as info:
        checkpoints.load(path)
    message = str(info.value)
    assert "not a catdog checkpoint" in message and "code" in message and "refusing" in message
    assert "\n" not in message
    assert not marker.exists(), "the pickled command ran"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"this is not a torch file", "unreadable"),
        (b"", "unreadable"),
    ],
)
def test_garbage_files_are_refused(tmp_path, content, reason):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(CatdogError, match=reason):
        checkpoints.load(path)


def test_foreign_torch_files_are_refused(tmp_path, model):
    plain = tmp_path / "state_dict.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(CatdogError, match="not a catdog checkpoint"):
        checkpoints.load(plain)
    with pytest.raises(CatdogError, match="checkpoint not found"):
        checkpoints.load(tmp_path / "nope.pt")


def test_truncated_checkpoint_is_refused(tmp_path, model):
    path = tmp_path / "best.pt"
    checkpoints.save(path, model, META)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CatdogError, match="not a catdog checkpoint"):
        checkpoints.load(path)


def test_restore_model_downloads_nothing_and_predicts_the_same(tmp_path, model, monkeypatch):
    path = tmp_path / "best.pt"
    checkpoints.save(path, model, META)

    def no_download(*args, **kwargs):
        raise AssertionError("restore_model tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    restored = checkpoints.restore_model(checkpoints.load(path))
    assert not restored.training
    assert not any(t.is_meta for t in (*restored.parameters(), *restored.buffers()))
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(restored(x), model(x))


def test_restore_model_with_the_wrong_backbone_is_a_catdog_error(tmp_path, model):
    path = tmp_path / "best.pt"
    checkpoints.save(path, model, {**META, "backbone": "resnet34"})
    with pytest.raises(CatdogError, match="does not match backbone resnet34"):
        checkpoints.restore_model(checkpoints.load(path))


# --- checkpoints from elsewhere: other precisions, broken numbers, odd fields, newer versions ----------------


SMALL_META = {**META, "backbone": "squeezenet1_1"}


@pytest.fixture(scope="module")
def small():
    return build_model("squeezenet1_1", 2, weights="none", seed=0).eval()


def _saved(tmp_path, model, meta=SMALL_META, transform=lambda k, v: v) -> Path:
    """A checkpoint of `model` whose tensors went through `transform` (as another tool might have stored them)."""
    path = tmp_path / "best.pt"
    checkpoints.save(path, model, meta)
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"] = {k: transform(k, v) for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_weights_in_another_precision_are_converted_not_refused(tmp_path, small, dtype):
    path = _saved(tmp_path, small, transform=lambda k, v: v.to(dtype) if v.is_floating_point() else v)
    restored = checkpoints.restore_model(checkpoints.load(path))
    assert all(p.dtype == torch.float32 for p in restored.parameters())
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(restored(x), small(x), rtol=0.05, atol=0.05)


def test_sparse_weights_are_made_dense(tmp_path, small):
    path = _saved(tmp_path, small, transform=lambda k, v: v.to_sparse() if k == "head.1.bias" else v)
    restored = checkpoints.restore_model(checkpoints.load(path))
    assert torch.equal(restored.head[1].bias, small.head[1].bias)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("key", ["head.1.weight", "features.0.bias", "features.12.expand3x3.weight"])
def test_weights_that_are_not_finite_are_refused(tmp_path, small, value, key):
    def poison(k, v):
        if k == key:
            v = v.clone()
            v.view(-1)[0] = value
        return v

    path = _saved(tmp_path, small, transform=poison)
    with pytest.raises(CatdogError, match=rf"not finite \(NaN or infinity in {key}\)"):
        checkpoints.restore_model(checkpoints.load(path))


ODD = {  # a field of the checkpoint -> values no model can be used with
    # two classes that print alike (issue 25): a name with the byte 0xff (not UTF-8) and one spelt with "\\xff"
    "classes": [["cat"], [], ["cat", "cat"], [1, 2], "ab", None, ["cat", ""], ["chat\udcff", "chat\\xff"]],
    "image_size": [0, -32, 10**9, 32.5, "32", True, None],
    "resize": [31, 10**6, "37", None],
    "mean": [[0.5, 0.5], ["a", "b", "c"], [float("nan")] * 3, 0.5, None],
    "std": [[0.0, 1.0, 1.0], [-0.2, 0.2, 0.2], [float("inf")] * 3, [1, 1], None],
    "backbone": ["resnet9000", "", 5, None],
    "state_dict": [{}, [1, 2], {"head.weight": [1.0]}, None],
    "calibration": [
        {"temperature": 0.0},
        {"temperature": -1.0},
        {"temperature": float("nan")},
        {"temperature": "2"},
        1.5,
        None,
        {"temperature": 1.5, "fitted_on": ["val"]},
        {"not_fitted": 3},
    ],
    # the record of the run (issue 25): evaluate, export, resume and warm starts read these too
    "data": [5, ["/data"], None],
    "config": [[1, 2], "lr=3", {"val_split": "0.2"}, {"val_split": 5.0}, {"seed": -1}, {"seed": float("nan")}],
    "split": [
        ["a.png"],
        {"train": "a.png"},
        {"train": [1, 2]},
        {"val": ["/etc/passwd"]},
        {"val": ["../outside/a.png"]},
        {"train": ["cat/a.png", None]},
        {"origin": 3, "train": []},
    ],
}


@pytest.mark.parametrize(
    ("field", "value"),
    [(f, v) for f, values in ODD.items() for v in values],
    ids=[f"{f}={v!r}"[:40] for f, values in ODD.items() for v in values],
)
def test_a_checkpoint_with_an_odd_field_is_refused_in_one_line(tmp_path, field, value):
    path = tmp_path / "best.pt"
    valid = {"format": checkpoints.FORMAT, **META, "state_dict": {"head.weight": torch.zeros(2, 512)}}
    torch.save(valid, path)
    checkpoints.load(path)  # refused below for the one field alone
    torch.save({**valid, field: value}, path)
    with pytest.raises(CatdogError) as info:
        checkpoints.load(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_a_newer_catdogs_extra_fields_still_load(tmp_path, small):
    path = _saved(tmp_path, small)
    ckpt = torch.load(path, weights_only=True)
    ckpt |= {"calibration": {"temperature": 1.5}, "config": {"new_option": True}, "ema_state": {"decay": 0.99}}
    torch.save(ckpt, path)
    restored = checkpoints.restore_model(checkpoints.load(path))
    assert restored.head[1].out_channels == 2


@pytest.mark.parametrize("classes", [["a", "b", "c"], ["a", "b", "c", "d", "e"]])
def test_a_checkpoint_whose_head_does_not_fit_its_classes_says_why(tmp_path, small, classes):
    path = _saved(tmp_path, small, meta={**SMALL_META, "classes": classes})
    with pytest.raises(CatdogError) as info:
        checkpoints.restore_model(checkpoints.load(path))
    assert str(info.value) == (
        f"checkpoint does not match backbone squeezenet1_1: head.1.weight has shape (2, 512, 1, "
        f"1) in the file; a model for {len(classes)} classes needs ({len(classes)}, 512, 1, 1)"
    )
