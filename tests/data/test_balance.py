"""Class imbalance: counts, the note above 3x, inverse-frequency weights, and the weighted sampler."""

from __future__ import annotations

import pytest
import torch

from catdog_cli.data.balance import class_counts, imbalance_note, inverse_frequency
from catdog_cli.data.decode import ImageBatch
from catdog_cli.data.sources import ResidentSource


def test_weights_are_inverse_frequency_and_give_every_class_the_same_total():
    counts = [30, 10, 0, 60]
    weights = inverse_frequency(counts)
    assert weights == pytest.approx([100 / (3 * 30), 100 / (3 * 10), 0.0, 100 / (3 * 60)])
    totals = [w * c for w, c in zip(weights, counts) if c]
    assert totals == pytest.approx([totals[0]] * 3)
    assert inverse_frequency([7, 7]) == [1.0, 1.0]  # even classes: the plain loss


def test_an_imbalance_over_three_to_one_is_noted_with_the_classes():
    assert class_counts([0, 1, 1, 1, 0, 2], 4) == [2, 3, 1, 0]
    assert imbalance_note(["cat", "dog"], [30, 10]) is None  # exactly 3x: not yet
    note = imbalance_note(["cat", "dog"], [31, 10])
    assert note is not None and "cat has 31" in note and "dog 10" in note and "3.1x" in note and "recall" in note


def test_the_balanced_sampler_draws_the_classes_about_evenly():
    labels = torch.tensor([0] * 90 + [1] * 10)
    batch = ImageBatch(torch.zeros(100, 1), labels, torch.arange(100))
    source = ResidentSource(batch, 10, shuffle=True, seed=0, class_weights=inverse_frequency([90, 10]))
    drawn = torch.cat([b.labels for epoch in range(20) if source.set_epoch(epoch) is None for b in source])
    assert len(drawn) == 20 * 100  # an epoch is as long as without the sampler
    assert abs(drawn.float().mean().item() - 0.5) < 0.05  # each class about half, not 90/10
    plain = ResidentSource(batch, 10, shuffle=True, seed=0)
    assert sorted(torch.cat([b.labels for b in plain]).tolist()) == sorted(labels.tolist())  # a permutation
