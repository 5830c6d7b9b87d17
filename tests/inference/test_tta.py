"""Test-time augmentation: which views, averaged how, and --tta through evaluate and predict."""

from __future__ import annotations

import pytest
import torch
from helpers import catdog, ok_json
from torch import nn

from catdog_cli.data.presets import Preset
from catdog_cli.inference.evaluate import evaluate_checkpoint
from catdog_cli.inference.predict import predict
from catdog_cli.inference.tta import TTAModel, with_tta


class Recording(nn.Module):
    """Says 'class 1' in proportion to the mean of the left half of what it sees; remembers each view."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        p = x[:, :, :, : x.shape[-1] // 2].mean(dim=(1, 2, 3)).clamp(0.01, 0.99)
        return torch.stack([1 - p, p], 1).log()


@pytest.mark.parametrize(("views", "count"), [("flip", 2), ("flip+crops", 10)])
def test_views_are_the_centre_and_corners_each_mirrored_and_probabilities_are_averaged(views, count):
    square = torch.zeros(1, 3, 10, 10)
    square[..., :5] = 1.0  # left half white: the centre crop sees it on its left, its mirror on its right
    model = Recording()
    out = TTAModel(model, crop=6, views=views)(square)
    assert len(model.seen) == count and all(v.shape[-2:] == (6, 6) for v in model.seen)
    assert torch.equal(model.seen[0], square[:, :, 2:8, 2:8]) and torch.equal(model.seen[1], model.seen[0].flip(3))
    if views == "flip+crops":
        assert torch.equal(model.seen[2], square[:, :, :6, :6]) and torch.equal(model.seen[8], square[:, :, 4:, 4:])
    reference = Recording()
    expected = torch.stack([reference(v).softmax(1) for v in model.seen]).mean(0)
    assert torch.allclose(out.exp(), expected, atol=1e-6)  # log of the mean probability: softmax gives it back
    assert torch.allclose(out.softmax(1), expected, atol=1e-6)


def test_tta_decodes_the_whole_square_of_the_eval_resize():
    model, preset = with_tta(nn.Identity(), Preset(224, 256, (0.5,) * 3, (0.5,) * 3))
    assert (preset.image_size, preset.resize) == (256, 256) and model.crop == 224


def test_evaluate_and_predict_with_tta(frozen_run):
    best = frozen_run["out"] / "best.pt"
    plain = evaluate_checkpoint(best, device="cpu")
    tta = evaluate_checkpoint(best, device="cpu", tta="flip+crops")
    assert tta["tta"] == "flip+crops" and plain["tta"] is None
    assert tta["num_images"] == plain["num_images"] and 0 <= tta["accuracy"] <= 1
    assert tta["loss"] != plain["loss"]  # other views, other probabilities
    rows = predict(best, [frozen_run["root"]], tta="flip")
    assert all(0 < r["confidence"] <= 1 for r in rows) and len(rows) == 16


def test_cli_tta_flag(frozen_run):
    best = frozen_run["out"] / "best.pt"
    result = ok_json(catdog("evaluate", best, "--device", "cpu", "--tta", "--json"))
    assert result["tta"] == "flip+crops"
    assert "--tta" in catdog("predict", "--help").output
