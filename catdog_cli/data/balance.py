"""Class imbalance: how uneven the training classes are, and the inverse-frequency weights of --balance.

Torch-free: the numbers go into the run record and the report as they are.
"""

from __future__ import annotations

from collections import Counter

IMBALANCE_RATIO = 3.0  # largest / smallest training class above this: the run says so


def class_counts(labels: list[int], num_classes: int) -> list[int]:
    counts = Counter(labels)
    return [counts.get(k, 0) for k in range(num_classes)]


def imbalance(counts: list[int]) -> float:
    """Largest class / smallest class (1.0 when even)."""
    return max(counts) / max(1, min(counts))


def imbalance_note(classes: list[str], counts: list[int]) -> str | None:
    """A note when the largest training class outnumbers the smallest more than IMBALANCE_RATIO times."""
    ratio = imbalance(counts)
    if ratio <= IMBALANCE_RATIO:
        return None
    big, small = counts.index(max(counts)), counts.index(min(counts))
    return (
        f"imbalanced training classes: {classes[big]} has {counts[big]} images, {classes[small]} "
        f"{counts[small]} ({ratio:.1f}x); watch each class's recall, not only accuracy (--balance evens them)"
    )


def inverse_frequency(counts: list[int]) -> list[float]:
    """n / (classes * n_c) per class: every class weighs the same in total, and even classes all weigh 1."""
    total, present = sum(counts), sum(1 for c in counts if c)
    return [total / (present * c) if c else 0.0 for c in counts]
