"""Images of neither class: an out-of-distribution ("unknown") detector fitted on the training images' features.

A classifier's softmax answers "which of my classes", never "is this one of them": a cat-vs-dog model calls an ant
a dog at 0.95. The detector looks at the backbone's features instead (the vector the head classifies) and scores
how far an image is from the training images; an image scoring above the threshold is `unknown`.

The threshold is chosen on in-distribution images only (the val split: keep `keep` of them, 95 % by default),
never on unknown images, which a user does not have. Candidates, measured side by side in benchmarks/ood.py:
- `msp`: minus the top softmax probability (the baseline every paper beats; what --min-confidence already is);
- `energy`: minus the logsumexp of the logits (Liu et al., 2020);
- `mahalanobis`: distance to the nearest class mean under one shared, shrunk covariance (Lee et al., 2018);
- `knn`: cosine distance to the k-th nearest training image, features L2-normalized (Sun et al., 2022);
- `vim`: the features' norm outside their principal subspace, as a virtual logit against the energy (Wang et al.,
  2022; needs a linear head).
Each is an `nn.Module` of tensors alone, so a checkpoint stores it as a state dict and an export runs it in-graph.

Torch only: training collects the features and calls `fit`; predict, evaluate and export call the module.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from catdog_cli.core.defaults import DEFAULT_OOD_KEEP as DEFAULT_KEEP
from catdog_cli.core.defaults import OOD_METHODS as METHODS
from catdog_cli.errors import CatdogError

KNN_K = 3  # the k-th neighbour: measured best of 1-20 (benchmarks/README.md); 1 lets one odd training image vouch
KNN_BANK = 20_000  # at most this many training images kept (evenly spread): 100 MB at 1,280 dims, a checkpoint's size
VIM_KEEP = 0.5  # ViM's principal subspace: the top half of the dimensions (at most half the training images)


def pooled(features: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The head's input as one float vector per image: feature maps (SqueezeNet's) averaged over space."""
    if isinstance(features, tuple):
        features = features[0]
    if features.dim() == 4:
        features = features.mean((2, 3))
    return features.flatten(1).float()


class MSP(nn.Module):
    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return -logits.float().softmax(1).amax(1)


class Energy(nn.Module):
    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return -logits.float().logsumexp(1)


class Mahalanobis(nn.Module):
    """min over classes of (f - mean_c)' precision (f - mean_c), as a squared distance after whitening."""

    def __init__(self, means: torch.Tensor, whiten: torch.Tensor):
        super().__init__()
        self.register_buffer("means", means @ whiten)  # (classes, d): the means already whitened
        self.register_buffer("whiten", whiten)  # (d, d): precision = whiten @ whiten.T

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        z = features @ self.whiten
        return ((z[:, None, :] - self.means[None]) ** 2).sum(2).amin(1)


class KNN(nn.Module):
    """1 - cosine similarity to the k-th nearest training image."""

    def __init__(self, bank: torch.Tensor, k: int):
        super().__init__()
        self.register_buffer("bank", F.normalize(bank, dim=1))  # (n, d)
        self.k = min(k, len(bank))

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        similarity = F.normalize(features, dim=1) @ self.bank.T
        return 1 - similarity.topk(self.k, dim=1).values[:, -1]


class ViM(nn.Module):
    """alpha * |f - origin| outside the principal subspace, minus the energy of the logits."""

    def __init__(self, origin: torch.Tensor, residual: torch.Tensor, alpha: torch.Tensor):
        super().__init__()
        self.register_buffer("origin", origin)  # (d,)
        self.register_buffer("residual", residual)  # (d, d - D)
        self.register_buffer("alpha", alpha)  # ()

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        virtual = ((features - self.origin) @ self.residual).norm(dim=1) * self.alpha
        return virtual - logits.float().logsumexp(1)


def _shrunk_covariance(x: torch.Tensor) -> torch.Tensor:
    """Ledoit-Wolf: the sample covariance pulled toward a multiple of the identity, by as much as the data's own
    noise says (more dimensions than images, as for hymenoptera's 245 at 1,280, leave the plain one singular)."""
    n, d = x.shape
    s = x.T @ x / n
    mu = s.trace() / d
    delta = ((s - mu * torch.eye(d, dtype=x.dtype)) ** 2).sum() / d
    beta = ((x**2).sum(1) ** 2).sum() / n**2 / d - (s**2).sum() / n / d
    shrink = (beta.clamp(min=0) / delta).clamp(max=1) if delta > 0 else torch.ones((), dtype=x.dtype)
    return shrink * mu * torch.eye(d, dtype=x.dtype) + (1 - shrink) * s


def _mahalanobis(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Mahalanobis:
    x = features.double()
    means = torch.stack([x[labels == c].mean(0) if (labels == c).any() else x.mean(0) for c in range(num_classes)])
    covariance = _shrunk_covariance(x - means[labels])
    values, vectors = torch.linalg.eigh(covariance)
    whiten = vectors / values.clamp(min=values.max() * 1e-9).sqrt()  # precision = whiten @ whiten.T
    return Mahalanobis(means.float(), whiten.float())


def _vim(features: torch.Tensor, head: nn.Module | None) -> ViM:
    if not isinstance(head, nn.Linear):
        raise CatdogError("the vim detector needs a linear head (this backbone's is not): choose another method")
    x = features.double()
    weight, bias = head.weight.detach().double().cpu(), head.bias.detach().double().cpu()
    origin = -torch.linalg.pinv(weight) @ bias  # where the logits are all zero
    d = x.shape[1]
    kept = max(1, min(int(d * VIM_KEEP), len(x) // 2))
    centred = x - origin
    _, vectors = torch.linalg.eigh(centred.T @ centred / len(x))  # ascending: the last `kept` are the principal ones
    residual = vectors[:, : d - kept]
    logits = x @ weight.T + bias
    alpha = logits.amax(1).mean() / (centred @ residual).norm(dim=1).mean().clamp(min=1e-12)
    return ViM(origin.float(), residual.float(), alpha.float())


def _bank(features: torch.Tensor, size: int = KNN_BANK) -> torch.Tensor:
    if len(features) <= size:
        return features
    return features[torch.linspace(0, len(features) - 1, size).long()]


def build(
    method: str,
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    head: nn.Module | None = None,
    k: int = KNN_K,
) -> nn.Module:
    """A scorer fitted on training features (pooled, N x d) and labels; `head`: the classifier (vim)."""
    features = features.float().cpu()
    if method == "msp":
        return MSP()
    if method == "energy":
        return Energy()
    if method == "mahalanobis":
        return _mahalanobis(features, labels.cpu(), num_classes)
    if method == "knn":
        return KNN(_bank(features), k)
    if method == "vim":
        return _vim(features, head)
    raise CatdogError(f"unknown detector {method!r}: choose one of {', '.join(METHODS)}")


def threshold_for(scores: torch.Tensor, keep: float) -> float:
    """The score at or below which `keep` of these (in-distribution) images fall: the smallest that keeps them."""
    if not 0 < keep <= 1:
        raise CatdogError(f"--ood-keep must be in (0, 1], got {keep}")
    ordered = scores.double().sort().values
    return ordered[max(0, math.ceil(keep * len(ordered)) - 1)].item()


class Detector(nn.Module):
    """A fitted scorer and its threshold: `forward` gives the scores, `unknown` says which pass the threshold."""

    def __init__(self, method: str, scorer: nn.Module, threshold: float, record: dict[str, Any]):
        super().__init__()
        self.method, self.scorer, self.threshold, self.record = method, scorer, threshold, record

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self.scorer(pooled(features), logits)

    def unknown(self, scores: torch.Tensor) -> torch.Tensor:
        return scores > self.threshold

    def checkpoint_entry(self) -> dict[str, Any]:
        """What best.pt keeps: the record (method, threshold, what it was fitted on) and the scorer's tensors."""
        extra = {"k": self.scorer.k} if isinstance(self.scorer, KNN) else {}
        record = {k: v for k, v in self.record.items() if k != "scores"}
        return {**record, **extra, "tensors": {k: v.detach().cpu() for k, v in self.scorer.state_dict().items()}}


def fit(
    method: str,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    head: nn.Module | None = None,
    keep: float = DEFAULT_KEEP,
) -> Detector:
    """Fit on train's (features, labels), threshold on val's (features, logits) to keep `keep` of val."""
    features, labels = train
    scorer = build(method, pooled(features), labels, num_classes, head).eval()
    with torch.inference_mode():
        scores = scorer(pooled(val[0]), val[1].float().cpu())
    threshold = threshold_for(scores, keep)
    record = {
        "method": method,
        "threshold": threshold,
        "keep": keep,
        "fitted_on": {"train": len(labels), "val": len(scores)},
        "val_kept": (scores <= threshold).double().mean().item(),
        "scores": {"val": scores.tolist()},  # the report's distribution; the checkpoint drops them
    }
    return Detector(method, scorer, threshold, record)


def from_checkpoint(ckpt: dict[str, Any]) -> Detector | None:
    """The checkpoint's detector; None when it has none (trained before catdog fitted one, or with --ood none)."""
    entry = ckpt.get("ood")
    if entry is None:
        return None
    try:
        method, tensors, threshold = entry["method"], entry["tensors"], float(entry["threshold"])
        scorer = {"msp": MSP, "energy": Energy}.get(method)
        if scorer is not None:
            built: nn.Module = scorer()
        elif method == "mahalanobis":
            built = Mahalanobis(torch.zeros_like(tensors["means"]), tensors["whiten"])
        elif method == "knn":
            built = KNN(tensors["bank"], int(entry["k"]))
        elif method == "vim":
            built = ViM(tensors["origin"], tensors["residual"], tensors["alpha"])
        else:
            raise ValueError(method)
        built.load_state_dict(tensors)
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise CatdogError("the checkpoint's unknown-image detector is damaged; refusing to use it") from None
    if not math.isfinite(threshold):
        raise CatdogError("the checkpoint's unknown-image detector has no finite threshold; refusing to use it")
    record = {k: v for k, v in entry.items() if k not in ("tensors", "k")}
    return Detector(method, built.eval(), threshold, record)


def summary(entry: Any) -> dict[str, Any] | None:
    """What a detector is, from a checkpoint's `ood` entry or an exported file's `unknown` metadata alike: method,
    threshold and the share of val it was fitted to keep. None without one; a threshold that is not a finite number
    is refused."""
    if not isinstance(entry, dict):
        return None
    try:
        threshold = float(entry["threshold"])
    except (KeyError, TypeError, ValueError):
        threshold = math.nan
    if not math.isfinite(threshold):
        raise CatdogError("the model's unknown-image detector has no finite threshold; refusing to use it")
    keep = entry.get("keep")
    return {
        "method": str(entry.get("method", "?")),
        "threshold": threshold,
        "keep": float(keep) if isinstance(keep, int | float) else None,
    }


NO_DETECTOR = "this checkpoint has no unknown-image detector (made before catdog fitted one): every image gets a class"


class Tap:
    """The head's input (pooled features) and output (logits) while installed: what a detector scores, taken from
    the pass that runs anyway. `every`: calls per batch (test-time augmentation's views); the first of each, the
    centre crop, is kept. With a `detector`, only its scores are kept (a split's features can be large)."""

    def __init__(self, every: int = 1, detector: Detector | None = None) -> None:
        self.every, self.detector, self.calls = every, detector, 0
        self.features: list[torch.Tensor] = []
        self.logits: list[torch.Tensor] = []
        self.scores: list[torch.Tensor] = []

    def _hook(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        if self.calls % self.every == 0:
            features, logits = pooled(args[0]).detach(), output.detach().float()
            if self.detector is not None:  # in fp32 whatever autocast the pass runs under: the threshold was
                with torch.autocast(features.device.type, enabled=False):  # set on fp32 scores
                    self.scores.append(self.detector(features, logits).cpu())
            else:
                self.features.append(features)
                self.logits.append(logits)
        self.calls += 1

    def take(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The features and logits seen since the last take, in the order the batches ran."""
        found = torch.cat(self.features), torch.cat(self.logits)
        self.features, self.logits = [], []
        return found

    def take_scores(self) -> torch.Tensor:
        """The detector's scores since the last take (CPU), in the order the batches ran."""
        found = torch.cat(self.scores) if self.scores else torch.zeros(0)
        self.scores = []
        return found


@contextmanager
def tapped(head: nn.Module, every: int = 1, detector: Detector | None = None) -> Iterator[Tap]:
    tap = Tap(every, detector)
    handle = head.register_forward_hook(tap._hook)
    try:
        yield tap
    finally:
        handle.remove()


def auroc(known: torch.Tensor, unknown: torch.Tensor) -> float:
    """P(an unknown image scores above a known one), ties counting half: 1 is perfect, 0.5 a coin."""
    _, inverse, counts = torch.cat([known, unknown]).double().unique(return_inverse=True, return_counts=True)
    ranks = (counts.cumsum(0) - (counts - 1) / 2).double()[inverse]  # tied scores share their mean rank
    n, m = len(known), len(unknown)
    return ((ranks[n:].sum() - m * (m + 1) / 2) / (n * m)).item()


def separation(known: torch.Tensor, unknown: torch.Tensor, threshold: float) -> dict[str, float]:
    """How well scores split known from unknown images: AUROC; FPR at 95 % of the known kept (the unknown share
    that a threshold keeping 95 % of these known images lets through); the unknown share past `threshold`."""
    at95 = threshold_for(known, 0.95)
    return {
        "auroc": auroc(known, unknown),
        "fpr_at_95_kept": (unknown <= at95).double().mean().item(),
        "caught": (unknown > threshold).double().mean().item(),
        "kept": (known <= threshold).double().mean().item(),
    }
