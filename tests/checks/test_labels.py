"""checks/labels.py: out-of-fold probabilities and the confident-learning count."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from catdog_cli.checks.labels import confident_suspects, fold_count, out_of_fold, stratified_folds


def clusters(per_class: int, classes: int, seed: int) -> tuple[torch.Tensor, list[int]]:
    """Unit-length features around one center per class, as a good backbone gives."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, 64, generator=g)
    labels = [c for c in range(classes) for _ in range(per_class)]
    x = centers[labels] + 0.8 * torch.randn(len(labels), 64, generator=g)
    return F.normalize(x, dim=1), labels


def test_folds_hold_every_class_and_are_seeded():
    labels = [0] * 10 + [1] * 7
    folds = stratified_folds(labels, 5, seed=3)
    for k in range(5):
        assert {labels[i] for i, f in enumerate(folds) if f == k} == {0, 1}
    assert folds == stratified_folds(labels, 5, seed=3) != stratified_folds(labels, 5, seed=4)


def test_fold_count_is_bounded_by_the_smallest_class():
    assert fold_count([0] * 10 + [1] * 3) == 3
    assert fold_count([0] * 10 + [1] * 1) == 0
    assert fold_count([0] * 10 + [1] * 10) == 5


def test_flipped_labels_are_the_top_suspects():
    x, labels = clusters(40, 3, seed=0)
    flipped = [3, 50, 95, 110]
    noisy = list(labels)
    for i in flipped:
        noisy[i] = (labels[i] + 1) % 3
    probs = out_of_fold(x, noisy, 3, folds=5, seed=0)
    suspects = confident_suspects(probs, noisy)
    top = {s.index for s in suspects[: 2 * len(flipped)]}
    assert set(flipped) <= top
    first = next(s for s in suspects if s.index == 50)
    assert first.suspected == labels[50] and first.probability > first.given_probability


def test_clean_labels_give_few_suspects():
    x, labels = clusters(40, 2, seed=1)
    probs = out_of_fold(x, labels, 2, folds=5, seed=0)
    assert len(confident_suspects(probs, labels)) <= 2
