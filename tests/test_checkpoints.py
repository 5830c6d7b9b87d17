"""Checkpoints: weights_only loading, code payloads refused, restore without any download."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision

from catdog_cli import checkpoints
from catdog_cli.backbones import build_model
from catdog_cli.errors import CatdogError

META = {"backbone": "resnet18", "classes": ["ants", "bees"], "image_size": 32, "resize": 37,
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "strategy": "freeze", "metrics": {"acc": 0.5}}


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
