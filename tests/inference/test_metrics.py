"""metrics: per-class precision, recall and F1 from the confusion matrix."""

from __future__ import annotations

import pytest
import torch

from catdog_cli.inference.metrics import confusion_matrix, per_class


def test_metrics_from_the_confusion_matrix():
    labels, preds = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 1, 1, 0, 2])
    confusion = confusion_matrix(labels, preds, 3).tolist()
    assert confusion == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    rows = {r["class"]: r for r in per_class(confusion, ["a", "b", "c"])}
    assert rows["a"]["precision"] == pytest.approx(0.5) and rows["a"]["recall"] == pytest.approx(0.5)
    assert rows["b"]["precision"] == pytest.approx(2 / 3) and rows["b"]["recall"] == 1.0
    assert rows["b"]["f1"] == pytest.approx(0.8)
    assert rows["c"]["support"] == 2
