"""The training recipe, each option on and off, on real data with real ImageNet weights, over seeds (issue 14).

    python benchmarks/recipe.py prepare --catdog DIR --hymenoptera DIR --sets SETS
    nice -n 10 python benchmarks/recipe.py probe --sets SETS --weights W --results RES
    nice -n 10 python benchmarks/recipe.py grid  --sets SETS --weights W --results RES
    nice -n 10 python benchmarks/recipe.py tta   --sets SETS --results RES
    python benchmarks/recipe.py table --results RES          # markdown, mean +- sd over seeds

Every run is `catdog_cli.training.loop.fit` as `catdog train` runs it and writes one JSON file into RES, so an
interrupted phase resumes where it stopped. The data sets (`prepare`):

- hymenoptera: the tutorial's ants/bees as they are (245 train, 153 val);
- catdog-sub: a stratified subset of catdog's train split, 200 images per class drawn with seed 0, and
  catdog's whole val split (400): CPU time is the limit, val stays as large as it is;
- hymenoptera-imb, catdog-imb: the same with the second class's training images cut to a fifth (val
  untouched, so val accuracy is also the mean of the per-class recalls), for --balance.

Phases:
- probe: does `freeze` converge? `freeze --no-augment` (the head on cached features) at several learning
  rates and epoch counts, against the head solved exactly (L-BFGS, cross-entropy + L2) on the same features.
  The frozen backbone's features are the same in every run: they are computed once per data set and image
  size and handed to each run (the engine's `feature_source`, memoized here).
- grid: freeze and finetune on hymenoptera and catdog-sub with each option on alone (label smoothing 0.1,
  MixUp 0.2, CutMix 1.0, EMA), freeze with twice the epochs and with the old lr, freeze-unfreeze beside
  discriminative (the same rates without the frozen start), and --balance (the sampler) off and on
  on the imbalanced sets. Early stopping is read off the base runs' histories (a run that stops
  early is the same run cut short: the schedule does not depend on where it stops).
- tta: the base runs' best.pt evaluated on val with and without test-time augmentation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from catdog_cli.core.config import TrainConfig
from catdog_cli.core.events import Events
from catdog_cli.data.dataset import load_dataset
from catdog_cli.data.sources import DecodeCache, ResidentSource
from catdog_cli.inference.evaluate import evaluate_checkpoint
from catdog_cli.inference.tta import TTA_VIEWS
from catdog_cli.training import features
from catdog_cli.training import loop as engine

BACKBONE = "timm:tf_efficientnet_lite0"
SEEDS = (0, 1, 2)
OPTIONS: dict[str, dict[str, Any]] = {
    "base": {},
    "label-smoothing 0.1": {"label_smoothing": 0.1},
    "mixup 0.2": {"mixup": 0.2},
    "cutmix 1.0": {"cutmix": 1.0},
    "ema": {"ema": True},
}


# --- data sets ------------------------------------------------------------------------------------------------


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _subset(src: Path, dst: Path, per_class: dict[str, int | float], seed: int = 0) -> None:
    """dst/train: per class, a number (or a fraction) of src/train's images drawn with `seed`; dst/val: all."""
    if dst.exists():
        return
    for cls_dir in sorted((src / "train").iterdir()):
        files = sorted(p for p in cls_dir.iterdir() if p.is_file())
        keep = per_class.get(cls_dir.name, len(files))
        count = keep if isinstance(keep, int) else round(len(files) * keep)
        for f in random.Random(seed).sample(files, min(count, len(files))):
            _link(f, dst / "train" / cls_dir.name / f.name)
    for f in sorted((src / "val").rglob("*")):
        if f.is_file():
            _link(f, dst / "val" / f.relative_to(src / "val"))


def prepare(args: argparse.Namespace) -> None:
    sets = Path(args.sets)
    _subset(Path(args.hymenoptera), sets / "hymenoptera", {})
    _subset(Path(args.catdog), sets / "catdog-sub", {"cat": 200, "dog": 200})
    _subset(Path(args.hymenoptera), sets / "hymenoptera-imb", {"bees": 0.2})
    _subset(sets / "catdog-sub", sets / "catdog-imb", {"dog": 40})
    shutil.copytree(Path(args.catdog), sets / "catdog", copy_function=os.link, dirs_exist_ok=True)
    for d in sorted(sets.iterdir()):
        counts = {c.name: len(list(c.iterdir())) for c in sorted((d / "train").iterdir())}
        print(d.name, "train", counts, "val", sum(1 for p in (d / "val").rglob("*") if p.is_file()))


# --- running ----------------------------------------------------------------------------------------------------


class FeatureMemo:
    """features.feature_source, computed once per (files, image size): the frozen backbone is the same pretrained
    network in every run, so its eval-crop features are too. Each run gets a fresh source of its own seed."""

    def __init__(self):
        self.real = features.feature_source
        self.found: dict[tuple, ResidentSource | None] = {}

    def __call__(self, backbone, split, loader, name="train", shuffle=True, class_weights=None):
        key = (tuple(split.paths), backbone.preset.image_size)
        if key not in self.found:
            self.found[key] = self.real(backbone, split, loader, name=name, shuffle=False)
        done = self.found[key]
        if done is None:
            return None
        return ResidentSource(done.batch, loader.batch_size, shuffle, loader.seed, done.skipped, class_weights)


def load() -> str:
    return "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def train(
    sets: Path, results: Path, runs: Path, cache: DecodeCache, name: str, data: str, keep: bool = False, **config: Any
) -> dict[str, Any]:
    """One `fit`, recorded as results/NAME.json (skipped when it exists); best.pt kept under runs/ if `keep`."""
    target = results / f"{name}.json"
    if target.exists():
        return json.loads(target.read_text())
    out = runs / name
    if out.exists():
        shutil.rmtree(out)
    before, start = load(), time.perf_counter()
    result = engine.fit(TrainConfig(str(sets / data), **config), out, Events(), cache)
    record = {
        "name": name,
        "data": data,
        "config": result["config"],
        "wall_s": time.perf_counter() - start,
        "load_before": before,
        "load_after": load(),
        "best_val_acc": result["best_val_acc"],
        "best_epoch": result["best_epoch"],
        "ended": result["ended"],
        "best_weights": result["best_weights"],
        "history": result["history"],
        "per_class": result["evaluation"]["per_class"],
        "train_counts": result["train_counts"],
    }
    for extra in ("last.pt", "report.html") + (() if keep else ("best.pt",)):
        (out / extra).unlink(missing_ok=True)
    target.write_text(json.dumps(record, indent=1))
    print(
        f"{name}: val {100 * record['best_val_acc']:.2f}% (epoch {record['best_epoch']}), "
        f"{record['wall_s']:.0f}s, load {before} -> {record['load_after']}",
        flush=True,
    )
    return record


def common(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "backbone": BACKBONE,
        "weights": args.weights,
        "image_size": args.image_size,
        "device": "cpu",
        "workers": 1,
        "batch_size": 32,
    }


def probe(args: argparse.Namespace) -> None:
    results, runs, sets = Path(args.results) / "probe", Path(args.runs), Path(args.sets)
    results.mkdir(parents=True, exist_ok=True)
    memo = FeatureMemo()
    features.feature_source = memo
    cache = DecodeCache()
    for data in ("catdog", "hymenoptera"):
        for seed in SEEDS:
            for lr in (1e-3, 3e-3, 1e-2, 3e-2):
                for epochs in (3, 10, 20):
                    train(
                        sets,
                        results,
                        runs,
                        cache,
                        f"{data}-lr{lr:g}-e{epochs}-s{seed}",
                        data,
                        strategy="freeze",
                        augment=False,
                        lr=lr,
                        epochs=epochs,
                        seed=seed,
                        **common(args),
                    )
        exact = results / f"{data}-lbfgs.json"
        if not exact.exists():
            exact.write_text(json.dumps(solve_exactly(memo, sets / data, args.image_size), indent=1))


def solve_exactly(memo: FeatureMemo, data: Path, image_size: int) -> dict[str, Any]:
    """The linear head minimizing mean cross-entropy + l2/2 |W|^2 on the cached train features (L-BFGS to
    convergence), scored on the cached val features, for a few l2."""
    by_split = {}
    dataset = load_dataset(str(data), 0.2, 0)
    for name in ("train", "val"):
        paths = tuple(dataset.splits[name].paths)
        source = next(s for (k, size), s in memo.found.items() if k == paths and size == image_size)
        by_split[name] = (source.batch.images.double(), source.batch.labels)
    (x, y), (vx, vy) = by_split["train"], by_split["val"]
    out = {}
    for l2 in (1e-4, 1e-3, 1e-2):
        w, b = lbfgs_head(x, y, l2)
        with torch.no_grad():
            logits = vx @ w + b
            out[f"l2 {l2:g}"] = {
                "val_acc": (logits.argmax(1) == vy).double().mean().item(),
                "val_loss": torch.nn.functional.cross_entropy(logits, vy).item(),
                "train_acc": ((x @ w + b).argmax(1) == y).double().mean().item(),
            }
    return out


def lbfgs_head(x: torch.Tensor, y: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.zeros(x.shape[1], int(y.max()) + 1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(int(y.max()) + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], max_iter=2000, tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + l2 / 2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def grid_cells(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Any], bool]]:
    """(name, data, config, keep best.pt), seed-major: one seed of everything comes first."""
    cells = []
    for seed in SEEDS:
        for data in ("hymenoptera", "catdog-sub"):
            for strategy in ("freeze", "finetune"):
                for option, overrides in OPTIONS.items():
                    cells.append(
                        (
                            f"{data}-{strategy}-{option}-s{seed}",
                            data,
                            {"strategy": strategy, "seed": seed, **overrides},
                            option == "base",
                        )
                    )
            cells.append(
                (
                    f"{data}-freeze-2x epochs-s{seed}",
                    data,
                    {"strategy": "freeze", "seed": seed, "epochs": 2 * args.epochs},
                    False,
                )
            )
            cells.append(
                (
                    f"{data}-freeze-lr 0.001 (old default)-s{seed}",
                    data,
                    {"strategy": "freeze", "seed": seed, "lr": 1e-3},
                    False,
                )
            )
            cells.append(
                (f"{data}-freeze-lr 0.01-s{seed}", data, {"strategy": "freeze", "seed": seed, "lr": 1e-2}, False)
            )
            cells.append(
                (
                    f"{data}-freeze-4x epochs-s{seed}",
                    data,
                    {"strategy": "freeze", "seed": seed, "epochs": 4 * args.epochs},
                    False,
                )
            )
            for strategy in ("freeze-unfreeze", "discriminative"):  # the same rates, with and without a frozen start
                cells.append((f"{data}-{strategy}-base-s{seed}", data, {"strategy": strategy, "seed": seed}, False))
        for data in ("hymenoptera-imb", "catdog-imb"):
            for strategy in ("freeze", "finetune"):
                # "balance loss" (a class-weighted loss) was measured too, at commit 3a0359d (benchmarks/README.md),
                # and left out of catdog: the sampler did as well or better
                for name, balance in (("none", False), ("sampler", True)):
                    cells.append(
                        (
                            f"{data}-{strategy}-balance {name}-s{seed}",
                            data,
                            {"strategy": strategy, "seed": seed, "balance": balance},
                            False,
                        )
                    )
    return cells


def grid(args: argparse.Namespace) -> None:
    results, runs, sets = Path(args.results) / "grid", Path(args.runs), Path(args.sets)
    results.mkdir(parents=True, exist_ok=True)
    features.feature_source = FeatureMemo()  # freeze's val features: the same frozen backbone in every run
    cache = DecodeCache()
    for name, data, overrides, keep in grid_cells(args):
        train(sets, results, runs, cache, name, data, keep, **{**common(args), "epochs": args.epochs, **overrides})


def tta(args: argparse.Namespace) -> None:
    """Each base run's best.pt on val without TTA, with flips, and with flips and corner crops."""
    results, runs = Path(args.results) / "tta", Path(args.runs)
    results.mkdir(parents=True, exist_ok=True)
    for best in sorted(runs.glob("*-base-s*/best.pt")):
        target = results / f"{best.parent.name}.json"
        if target.exists():
            continue
        record: dict[str, Any] = {"name": best.parent.name, "load_before": load()}
        for views in (None, *TTA_VIEWS):
            start = time.perf_counter()
            ev = evaluate_checkpoint(best, split="val", device="cpu", workers=1, tta=views)
            record[views or "none"] = {
                "accuracy": ev["accuracy"],
                "loss": ev["loss"],
                "seconds": time.perf_counter() - start,
            }
        record["load_after"] = load()
        target.write_text(json.dumps(record, indent=1))
        print(best.parent.name, {k: v for k, v in record.items() if isinstance(v, dict)}, flush=True)


# --- the table --------------------------------------------------------------------------------------------------


def mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def verdict(base: list[float], other: list[float]) -> str:
    """A difference of means smaller than the larger seed spread is no effect."""
    if len(base) < 2 or len(other) < 2:
        return "(fewer than 2 seeds)"
    diff = statistics.mean(other) - statistics.mean(base)
    spread = max(statistics.stdev(base), statistics.stdev(other))
    word = "no effect" if abs(diff) <= spread else "better" if diff > 0 else "worse"
    return f"{diff:+.2f} ({word})"


def probe_table(results: Path) -> list[str]:
    """freeze --no-augment per (lr, epochs): val acc of the best epoch and of the last, vs the exact head."""
    lines = []
    for data in ("catdog", "hymenoptera"):
        runs = {k.removeprefix(f"{data}-"): v for k, v in _runs(results).items() if k.startswith(f"{data}-lr")}
        exact_file = results / f"{data}-lbfgs.json"
        if not runs or not exact_file.exists():
            continue
        exact = json.loads(exact_file.read_text())
        lines += [
            f"**{data}** (head solved exactly, L-BFGS, val acc %: "
            + ", ".join(f"{k}: {100 * v['val_acc']:.2f}" for k, v in exact.items())
            + ")",
            "",
            "| lr | epochs | val acc % (best epoch) | val acc % (last epoch) | val loss (last epoch) |",
            "|---|---|---|---|---|",
        ]
        for key, records in sorted(
            runs.items(), key=lambda kv: (float(kv[0][2:].split("-")[0]), int(kv[0].split("-e")[1]))
        ):
            lr, epochs = key[2:].split("-e")
            lines.append(
                f"| {lr} | {epochs} | {mean_sd([100 * r['best_val_acc'] for r in records])} | "
                f"{mean_sd([100 * r['history'][-1]['val_acc'] for r in records])} | "
                f"{mean_sd([r['history'][-1]['val_loss'] for r in records])} |"
            )
        lines.append("")
    return lines


def _runs(results: Path) -> dict[str, list[dict[str, Any]]]:
    """Records grouped by cell name without the seed suffix."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(results.glob("*.json")):
        record = json.loads(path.read_text())
        if "name" in record:
            grouped.setdefault(record["name"].rsplit("-s", 1)[0], []).append(record)
    return grouped


def _split_key(key: str) -> tuple[str, str, str]:
    """'catdog-sub-freeze-unfreeze-base' -> ('catdog-sub', 'freeze-unfreeze', 'base')."""
    for strategy in ("freeze-unfreeze", "discriminative", "finetune", "freeze"):
        data, sep, option = key.partition(f"-{strategy}-")
        if sep:
            return data, strategy, option
    raise ValueError(key)


ORDER = [
    "base",
    "2x epochs",
    "4x epochs",
    "lr 0.001 (old default)",
    "lr 0.01",
    *OPTIONS,
    "balance none",
    "balance loss",
    "balance sampler",
]


def _ordered(runs: dict[str, list[dict[str, Any]]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Data set, then strategy, then base first and the options in the grid's order."""

    def key(item: tuple[str, list[dict[str, Any]]]) -> tuple[str, int, int]:
        data, strategy, option = _split_key(item[0])
        return data, ["freeze", "finetune", "discriminative", "freeze-unfreeze"].index(strategy), ORDER.index(option)

    return sorted(runs.items(), key=key)


def _acc(records: list[dict[str, Any]]) -> list[float]:
    return [100 * r["best_val_acc"] for r in records]


def options_table(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = [
        "| data | strategy | option | val acc % (best epoch) | Δ vs base (verdict) | val acc % (last epoch) | "
        "s per run (train + val) | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, records in _ordered(runs):
        data, strategy, option = _split_key(key)
        if option.startswith("balance"):
            continue
        reference = {"freeze-unfreeze": "discriminative", "discriminative": "finetune"}.get(strategy, strategy)
        base = runs.get(f"{data}-{reference}-base", [])
        seconds = statistics.mean(sum(h["seconds"] + h["val_seconds"] for h in r["history"]) for r in records)
        versus = "" if records is base else verdict(_acc(base), _acc(records))
        if reference != strategy:
            versus += f" vs {reference}"
        lines.append(
            f"| {data} | {strategy} | {option} | {mean_sd(_acc(records))} | {versus} | "
            f"{mean_sd([100 * r['history'][-1]['val_acc'] for r in records])} | {seconds:.0f} | "
            f"{len(records)} |"
        )
    return lines


def _recall(records: list[dict[str, Any]], name: str) -> list[float]:
    return [100 * next(c["recall"] for c in r["per_class"] if c["class"] == name) for r in records]


def balance_table(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """On the imbalanced sets val is balanced: accuracy is the mean recall; the minority's recall apart."""
    lines = [
        "| data (train counts) | strategy | --balance | val acc % | Δ vs none (verdict) | minority recall % | "
        "majority recall % |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, records in _ordered(runs):
        data, strategy, option = _split_key(key)
        if not option.startswith("balance"):
            continue
        counts = records[0]["train_counts"]
        minority, majority = min(counts, key=counts.get), max(counts, key=counts.get)
        base = runs.get(f"{data}-{strategy}-balance none", [])
        versus = "" if records is base else verdict(_acc(base), _acc(records))
        lines.append(
            f"| {data} ({', '.join(f'{k} {v}' for k, v in counts.items())}) | {strategy} | "
            f"{option.removeprefix('balance ')} | {mean_sd(_acc(records))} | {versus} | "
            f"{mean_sd(_recall(records, minority))} | {mean_sd(_recall(records, majority))} |"
        )
    return lines


def stopped(history: list[dict[str, Any]], patience: int) -> tuple[int, float]:
    """(epochs run, best val acc) had --patience stopped the run: the engine's rule replayed on its history."""
    best_acc, best_loss, best_epoch = -1.0, math.inf, 0
    for h in history:
        if engine.better(h["val_acc"], h["val_loss"], best_acc, best_loss):
            best_acc, best_loss, best_epoch = h["val_acc"], h["val_loss"], h["epoch"]
        if h["epoch"] - best_epoch >= patience:
            return h["epoch"], best_acc
    return len(history), best_acc


def early_stopping_table(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = ["| data | run | epochs run | val acc % (best epoch) |", "|---|---|---|---|"]
    for key, records in _ordered(runs):
        data, strategy, option = _split_key(key)
        if option not in ("base", "2x epochs", "4x epochs") or strategy in ("freeze-unfreeze", "discriminative"):
            continue
        name = f"{strategy}, {len(records[0]['history'])} epochs"
        lines.append(f"| {data} | {name} | {len(records[0]['history'])} | {mean_sd(_acc(records))} |")
        for patience in (1, 2):
            ends = [stopped(r["history"], patience) for r in records]
            lines.append(
                f"| {data} | {name}, --patience {patience} | {mean_sd([float(e) for e, _ in ends])} | "
                f"{mean_sd([100 * a for _, a in ends])} |"
            )
    return lines


def tta_table(results: Path) -> list[str]:
    grouped = _runs(results)
    lines = [
        "| data | strategy | views | val acc % | Δ vs none (verdict) | val loss | s per val pass |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, records in grouped.items():
        data, strategy, _ = _split_key(key)
        none = [100 * r["none"]["accuracy"] for r in records]
        for views in ("none", *TTA_VIEWS):
            acc = [100 * r[views]["accuracy"] for r in records]
            lines.append(
                f"| {data} | {strategy} | {views} | {mean_sd(acc)} | "
                f"{'' if views == 'none' else verdict(none, acc)} | "
                f"{mean_sd([r[views]['loss'] for r in records])} | "
                f"{statistics.mean(r[views]['seconds'] for r in records):.1f} |"
            )
    return lines


def table(args: argparse.Namespace) -> None:
    root = Path(args.results)
    runs = _runs(root / "grid")
    sections = [
        ("freeze's convergence (probe)", probe_table(root / "probe")),
        ("each option on alone", options_table(runs) if runs else []),
        ("class imbalance", balance_table(runs) if runs else []),
        ("early stopping (replayed on the runs' histories)", early_stopping_table(runs) if runs else []),
        ("test-time augmentation (base runs' best.pt, val)", tta_table(root / "tta")),
    ]
    for title, lines in sections:
        if lines:
            print(f"### {title}\n")
            print("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["prepare", "probe", "grid", "tta", "table"])
    parser.add_argument("--catdog", help="prepare: catdog as `catdog fetch catdog` laid it out")
    parser.add_argument("--hymenoptera", help="prepare: hymenoptera as `catdog fetch hymenoptera` laid it out")
    parser.add_argument("--sets", default="/tmp/recipe/sets")
    parser.add_argument("--results", default="/tmp/recipe/results")
    parser.add_argument("--runs", default="/tmp/recipe/runs", help="run folders (best.pt of the base runs, for tta)")
    parser.add_argument("--weights", default="../shared/weights/tf_efficientnet_lite0_imagenet.pth")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    {"prepare": prepare, "probe": probe, "grid": grid, "tta": tta, "table": table}[args.phase](args)


if __name__ == "__main__":
    main()
