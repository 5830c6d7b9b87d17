"""Calibrated confidence: one temperature fitted on the val split, and how well confidence matches accuracy.

A network's softmax is not a probability you can act on: trained to convergence it tends to be over-confident,
trained for a few epochs under-confident. Temperature scaling (Guo et al., 2017) divides the logits by
one number T, fitted to minimise the val split's negative log-likelihood. The argmax, and so every label and
accuracy, stays the same; only the confidence changes. A checkpoint without a temperature (written before
catdog fitted one) means T = 1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from catdog_cli.core.records import Calibration, Coverage, ReliabilityBin
from catdog_cli.core.world import World
from catdog_cli.runtime import distributed

BINS = 15  # equal-width confidence bins, as in Guo et al.
T_RANGE = (0.05, 20.0)  # sharpen at most 20x, soften at most 20x
MIN_IMAGES = 20  # fewer val images than this say too little about one's confidence to fit a temperature on
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)  # the accuracy/coverage table of the report


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / T), in float64."""
    return F.cross_entropy(logits.double() / temperature, labels).item()


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, str | None]:
    """The T in T_RANGE that minimises the NLL, and None; or 1.0 and the reason nothing could be fitted.

    NLL is convex in 1/T, so it has one minimum along log T: a golden-section search finds it to machine
    precision, deterministically, without a learning rate. With no wrong prediction there is no minimum (the
    NLL keeps falling as T -> 0, confidence -> 100 %): nothing to learn from, so T stays 1; so it does with
    fewer than MIN_IMAGES images, too few to say how confident the model should be.
    """
    if len(labels) < MIN_IMAGES:
        return 1.0, f"{len(labels)} val images are too few to fit a temperature on (it takes {MIN_IMAGES})"
    preds = logits.argmax(1)
    if bool((preds == labels).all()):
        return 1.0, "every val image is right: no mistakes to fit a temperature on"
    ratio = (math.sqrt(5) - 1) / 2
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(logits, labels, math.exp(a)), nll(logits, labels, math.exp(b))
    for _ in range(80):  # the bracket shrinks by 0.618 each time: 80 steps leave ~1e-16 of it
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(logits, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(logits, labels, math.exp(b))
    return math.exp((lo + hi) / 2), None


def reliability(confidence: torch.Tensor, correct: torch.Tensor, bins: int = BINS) -> list[ReliabilityBin]:
    """Images by confidence, in equal-width bins over [0, 1]: each non-empty bin's mean confidence and accuracy."""
    which = (confidence.double() * bins).floor().clamp(0, bins - 1).long()  # a confidence of 1.0 is in the last bin
    rows: list[ReliabilityBin] = []
    for k in range(bins):
        mask = which == k
        n = int(mask.sum())
        if n:
            rows.append(
                {
                    "lo": k / bins,
                    "hi": (k + 1) / bins,
                    "count": n,
                    "confidence": confidence[mask].double().mean().item(),
                    "accuracy": correct[mask].double().mean().item(),
                }
            )
    return rows


def expected_calibration_error(bins: list[ReliabilityBin]) -> float:
    """ECE: the gap between confidence and accuracy, averaged over bins weighted by their images."""
    total = sum(b["count"] for b in bins)
    return sum(b["count"] * abs(b["confidence"] - b["accuracy"]) for b in bins) / max(1, total)


def selective(confidence: torch.Tensor, correct: torch.Tensor, threshold: float) -> Coverage:
    """Accuracy on the images with confidence >= threshold (the ones the model is sure about), and their share."""
    sure = confidence >= threshold
    n = int(sure.sum())
    accuracy = correct[sure].double().mean().item() if n else None
    return {"threshold": threshold, "coverage": n / max(1, len(confidence)), "accuracy": accuracy, "images": n}


def confidence(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The top class's calibrated probability, per image."""
    return (logits / temperature).softmax(1).amax(1)


def measure(logits: torch.Tensor, labels: torch.Tensor, temperature: float, split: str) -> Calibration:
    """Calibration of `split` before (T = 1) and after the temperature, and accuracy against coverage after it."""
    logits, labels = logits.double(), labels.long()
    correct = logits.argmax(1) == labels
    before = reliability(confidence(logits, 1.0), correct)
    calibrated = confidence(logits, temperature)
    after = reliability(calibrated, correct)
    return {
        "temperature": temperature,
        "split": split,
        "images": len(labels),
        "bins": BINS,
        "ece_before": expected_calibration_error(before),
        "ece_after": expected_calibration_error(after),
        "nll_before": nll(logits, labels),
        "nll_after": nll(logits, labels, temperature),
        "reliability_before": before,
        "reliability_after": after,
        "coverage": [selective(calibrated, correct, t) for t in THRESHOLDS],
    }


def calibrate(logits: torch.Tensor, labels: torch.Tensor, world: World = World()) -> Calibration:
    """Fit the temperature on the val split's logits and measure the result there (end of training, with the
    best weights). Under torchrun each rank holds its shard: every rank fits on all of them, to the same T."""
    shards = distributed.gather((logits, labels), world)
    logits, labels = torch.cat([s[0] for s in shards]), torch.cat([s[1] for s in shards])
    temperature, reason = fit_temperature(logits, labels)
    result = measure(logits, labels, temperature, "val")
    result["fitted_on"], result["in_sample"] = "val", True
    if reason:
        result["not_fitted"] = reason
    return result


def checkpoint_entry(cal: Calibration) -> dict[str, Any]:
    """What a checkpoint keeps of a calibration: the temperature, and where and how well it was fitted."""
    keep = ("temperature", "fitted_on", "images", "ece_before", "ece_after", "nll_before", "nll_after", "not_fitted")
    return {k: cal[k] for k in keep if k in cal}


def temperature_of(ckpt: dict[str, Any]) -> float:
    """A checkpoint's temperature; 1 (the plain softmax) for checkpoints written before calibration existed."""
    return float((ckpt.get("calibration") or {}).get("temperature", 1.0))
