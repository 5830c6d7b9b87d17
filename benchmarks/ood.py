"""Unknown-image detectors side by side (issue 22): train on one dataset, show the other as "neither".

    python benchmarks/ood.py --data catdog=path/to/catdog --data hymenoptera=path/to/hymenoptera_data \\
        --weights path/to/tf_efficientnet_lite0_imagenet.pth

The frozen backbone's features (eval crops) of every image of both datasets are computed once and cached
(--cache): freeze trains the head on exactly these. Then, per direction (in-distribution A, unknown = every image of
B) and per seed: A's train and val pooled and split 80/20 by the seed; a linear head trained on the train part
(AdamW, catdog's freeze defaults, no augmentation: what freeze does on cached features); every detector of
catdog_cli.inference.ood fitted on the train part, its threshold set to keep --keep of the val part; then AUROC,
FPR at 95 % kept, the share of B caught, accuracy on the kept val images against all val images, fit time,
scoring time per 1,000 images and the bytes it adds to the checkpoint. The baseline: the calibrated softmax at
0.9 (what --min-confidence 0.9 does).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from catdog_cli.data.dataset import load_dataset
from catdog_cli.data.sources import Loader, ThreadedSource
from catdog_cli.inference import calibration, ood
from catdog_cli.models.backbones import build_model, preset_for

BACKBONE = "timm:tf_efficientnet_lite0"


def cache_features(name: str, data: str, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """Every image's pooled backbone features (train and val together) and labels, computed once."""
    path = Path(args.cache) / f"{name}-{args.image_size or 'default'}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    model = build_model(BACKBONE, 2, args.weights).eval()
    preset = preset_for(BACKBONE, args.image_size)
    dataset = load_dataset(data, 0.2, 0)
    features, labels = [], []
    start = time.perf_counter()
    for split in ("train", "val"):
        source = ThreadedSource(dataset.split(split), preset.eval_spec(), Loader(torch.device("cpu"), 64, 2))
        with torch.inference_mode():
            for batch in source:
                features.append(ood.pooled(model.features(preset.model_input(batch))))
                labels.append(batch.labels)
    found = {"features": torch.cat(features), "labels": torch.cat(labels), "seconds": time.perf_counter() - start}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(found, path)
    return found


def train_head(x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int, batch: int = 32) -> nn.Linear:
    """freeze's head on cached features: AdamW at freeze's default lr, cosine-free (a few epochs on a linear model)."""
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(x.shape[1], int(y.max()) + 1)
    with torch.no_grad():
        bound = 1 / x.shape[1] ** 0.5
        head.weight.uniform_(-bound, bound, generator=generator)
        head.bias.uniform_(-bound, bound, generator=generator)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.01)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(batch):
            loss = nn.functional.cross_entropy(head(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return head.eval()


def one_run(known: dict, unknown: dict, seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    x, y = known["features"], known["labels"]
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(len(x) * 0.8)
    tr, va = order[:cut], order[cut:]
    head = train_head(x[tr], y[tr], seed, args.epochs)
    with torch.no_grad():
        val_logits, out_logits = head(x[va]), head(unknown["features"])
    right = val_logits.argmax(1) == y[va]
    temperature, _ = calibration.fit_temperature(val_logits, y[va])
    baseline = {
        "method": "softmax >= 0.9 (calibrated)",
        "caught": (calibration.confidence(out_logits, temperature) < 0.9).double().mean().item(),
        "kept": (calibration.confidence(val_logits, temperature) >= 0.9).double().mean().item(),
    }
    rows = [baseline]
    variants = [(m, {}) for m in args.methods if m != "knn"]
    variants += [("knn", {"k": k}) for k in args.knn_k if "knn" in args.methods]
    for method, params in variants:
        start = time.perf_counter()
        scorer = ood.build(method, x[tr], y[tr], 2, head, **params)
        with torch.no_grad():
            val_scores = scorer(x[va], val_logits)
        threshold = ood.threshold_for(val_scores, args.keep)
        fit_s = time.perf_counter() - start
        with torch.no_grad():
            start = time.perf_counter()
            out_scores = scorer(unknown["features"], out_logits)
            score_ms = (time.perf_counter() - start) * 1000 / len(out_scores) * 1000
        kept = val_scores <= threshold
        rows.append(
            {
                "method": method + "".join(f" k={v}" for v in params.values()),
                **ood.separation(val_scores, out_scores, threshold),
                "acc_all": right.double().mean().item(),
                "acc_kept": right[kept].double().mean().item(),
                "fit_s": fit_s,
                "score_ms_per_1000": score_ms,
                "bytes": sum(t.numel() * t.element_size() for t in scorer.state_dict().values()),
            }
        )
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        entry: dict[str, Any] = {"method": method, "seeds": len(mine)}
        for key in mine[0]:
            if key == "method":
                continue
            values = [r[key] for r in mine]
            entry[key] = {
                "mean": statistics.mean(values),
                "min": min(values),
                "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            }
        out.append(entry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, help="NAME=FOLDER, twice")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--cache", default="/tmp/catdog-ood-features")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--keep", type=float, default=ood.DEFAULT_KEEP)
    parser.add_argument("--methods", type=lambda t: t.split(","), default=list(ood.METHODS))
    parser.add_argument("--knn-k", type=lambda t: [int(k) for k in t.split(",")], default=[1, ood.KNN_K, 50])
    parser.add_argument("--out", default=None, help="write the JSON here too")
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = dict(d.split("=", 1) for d in args.data)
    features = {name: cache_features(name, folder, args) for name, folder in data.items()}
    report: dict[str, Any] = {
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "feature_seconds": {n: f.get("seconds") for n, f in features.items()},
        "directions": {},
    }
    for known in data:
        for unknown in data:
            if known == unknown:
                continue
            rows = [r for seed in range(args.seeds) for r in one_run(features[known], features[unknown], seed, args)]
            report["directions"][f"{known} -> unknown {unknown}"] = summarize(rows)
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
