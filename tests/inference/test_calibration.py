"""Temperature scaling and the calibration measures, on synthetic logits whose right answer is known."""

from __future__ import annotations

import pytest
import torch

from catdog_cli.inference import calibration


def sampled(temperature: float, n: int = 20_000, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose labels are drawn from softmax(logits / temperature): the maximum-likelihood T is `temperature`."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=generator) * 4
    labels = torch.multinomial((logits / temperature).softmax(1), 1, generator=generator).squeeze(1)
    return logits, labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_recovers_the_temperature_the_labels_were_drawn_with(true_t: float) -> None:
    logits, labels = sampled(true_t)
    fitted, reason = calibration.fit_temperature(logits, labels)
    assert reason is None
    assert fitted == pytest.approx(true_t, rel=0.05)
    # and it is the minimum of the NLL, not just near the answer
    best = calibration.nll(logits, labels, fitted)
    assert best <= calibration.nll(logits, labels, fitted * 1.01)
    assert best <= calibration.nll(logits, labels, fitted / 1.01)


def test_fit_keeps_t_1_without_mistakes_or_with_too_few_images() -> None:
    logits, labels = sampled(1.0, n=40, seed=2)
    right = logits.argmax(1)  # every prediction right: the NLL falls without end as T -> 0
    assert calibration.fit_temperature(logits, right) == (
        1.0,
        "every val image is right: no mistakes to fit a temperature on",
    )
    assert calibration.fit_temperature(logits[:19], labels[:19]) == (
        1.0,
        "19 val images are too few to fit a temperature on (it takes 20)",
    )
    assert calibration.fit_temperature(logits[:20], labels[:20])[1] is None


def test_temperature_lowers_the_ece_of_an_over_confident_model() -> None:
    logits, labels = sampled(3.0, seed=1)  # the logits are 3x too sharp for their labels
    cal = calibration.calibrate(logits, labels)
    assert cal["temperature"] == pytest.approx(3.0, rel=0.05)
    assert cal["ece_before"] > 0.1 and cal["ece_after"] < 0.02
    assert cal["nll_after"] < cal["nll_before"]
    assert sum(b["count"] for b in cal["reliability_after"]) == len(labels)


def test_reliability_bins_and_ece_by_hand() -> None:
    confidence = torch.tensor([0.95, 0.95, 0.95, 0.95, 0.55, 0.55, 1.0])
    correct = torch.tensor([True, True, True, False, True, False, True])
    bins = calibration.reliability(confidence, correct, bins=10)
    assert [(b["lo"], b["count"], b["accuracy"]) for b in bins] == [(0.5, 2, 0.5), (0.9, 5, 0.8)]
    assert bins[1]["confidence"] == pytest.approx(0.96)
    # |0.55 - 0.5| * 2/7 + |0.96 - 0.8| * 5/7
    assert calibration.expected_calibration_error(bins) == pytest.approx((0.05 * 2 + 0.16 * 5) / 7)


def test_selective_accuracy_and_coverage() -> None:
    confidence = torch.tensor([0.99, 0.97, 0.6, 0.95, 0.7])
    correct = torch.tensor([True, True, False, False, True])
    assert calibration.selective(confidence, correct, 0.9) == {
        "threshold": 0.9,
        "coverage": 0.6,
        "accuracy": pytest.approx(2 / 3),
        "images": 3,
    }
    assert calibration.selective(confidence, correct, 0.999)["accuracy"] is None


def test_old_checkpoints_mean_t_1() -> None:
    assert calibration.temperature_of({"classes": ["a"]}) == 1.0
    assert calibration.temperature_of({"calibration": {"temperature": 1.7}}) == 1.7
