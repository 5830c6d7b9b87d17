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


def test_a_rate_with_nothing_to_count_is_none_and_says_why():
    """Class c has no image in the split and nothing was predicted as b: 0.0 % would read as a total miss."""
    rows = {r["class"]: r for r in per_class([[1, 0, 1], [2, 0, 0], [0, 0, 0]], ["a", "b", "c"], "test")}
    c, b = rows["c"], rows["b"]
    assert (c["recall"], c["f1"], c["precision"], c["support"]) == (None, None, 0.0, 0)
    assert c["undefined"] == "no image of this class in the test split (recall)"
    assert (b["precision"], b["recall"], b["f1"]) == (None, 0.0, 0.0)  # every b missed: a real 0
    assert b["undefined"] == "no image of the test split predicted as it (precision)"
    assert "undefined" not in rows["a"] and rows["a"]["f1"] == pytest.approx(2 / 5)
