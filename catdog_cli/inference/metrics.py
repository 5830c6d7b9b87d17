"""Classification metrics from a confusion matrix (rows: true class, columns: predicted class)."""

from __future__ import annotations

import torch

from catdog_cli.core.records import ClassMetrics


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """On the device, without a host sync."""
    return torch.bincount(labels * num_classes + preds, minlength=num_classes**2).view(num_classes, num_classes)


def per_class(confusion: list[list[int]], classes: list[str], split: str = "val") -> list[ClassMetrics]:
    """Per class: precision, recall, F1 and support. A rate with nothing to count is None, not 0: recall of a
    class without an image in the split (and its F1), precision of a class nothing was predicted as; `undefined`
    then says why (`split` names the split in it)."""
    rows: list[ClassMetrics] = []
    for i, name in enumerate(classes):
        tp = confusion[i][i]
        predicted = sum(row[i] for row in confusion)
        support = sum(confusion[i])
        precision = tp / predicted if predicted else None
        recall = tp / support if support else None
        f1 = 2 * tp / (support + predicted) if support else None  # their harmonic mean; 0 when nothing was found
        row: ClassMetrics = {"class": name, "precision": precision, "recall": recall, "f1": f1, "support": support}
        where = "the data" if split == "all" else f"the {split} split"
        why = [
            what
            for what, empty in (
                (f"no image of this class in {where} (recall)", not support),
                (f"no image of {where} predicted as it (precision)", not predicted),
            )
            if empty
        ]
        if why:
            row["undefined"] = "; ".join(why)
        rows.append(row)
    return rows
