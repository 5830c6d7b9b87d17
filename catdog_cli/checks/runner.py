"""`catdog check`: read every file of a dataset once, then assemble what is wrong with it into one record.

The input is only ever read: nothing is written in the data folder (the report goes where --report says).
"""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from catdog_cli.checks.clean import write_clean_copy
from catdog_cli.checks.duplicates import Pair, exact_groups, near_pairs
from catdog_cli.checks.features import Backbone
from catdog_cli.checks.images import Inspected, inspect
from catdog_cli.checks.labels import FOLDS, confident_suspects, fold_count, out_of_fold
from catdog_cli.core.events import Events
from catdog_cli.core.files import create_new
from catdog_cli.core.findings import (
    CSV_COLUMNS,
    LEVELS,
    CheckResult,
    DuplicatePair,
    FileRef,
    ImageProblem,
    LabelCheck,
    LabelSuspect,
    finding_rows,
)
from catdog_cli.data.balance import imbalance
from catdog_cli.data.dataset import load_dataset
from catdog_cli.data.decode import default_workers
from catdog_cli.data.folders import Walk, split_of, visible_dirs
from catdog_cli.data.presets import IMAGENET
from catdog_cli.reporting.check_report import write_check_report

CHUNK = 64  # images decoded (in threads) and run through the backbone at once
PROBLEM_ORDER = ("unreadable", "placeholder", "constant", "extension", "animated", "tiny", "aspect")


@dataclass(frozen=True)
class CheckOptions:
    backbone: str
    weights: str = "default"
    image_size: int | None = None
    device: str = "cpu"
    features: bool = True  # False: no backbone; near-duplicates by perceptual hash, no label check
    folds: int = FOLDS
    seed: int = 0
    workers: int | None = None


@dataclass(frozen=True)
class Item:
    path: Path
    split: str
    label: int | None  # index into the classes; None when unlabeled


def dataset_items(data: str | Path) -> tuple[Path, list[str], list[Item], list[str]]:
    """(folder, classes, every image file with its split and label, notes). Labeled splits as training reads
    them, plus an unlabeled/ (test1/) folder when there is one: a leak into it matters too."""
    dataset = load_dataset(data, val_split=None)
    items = [
        Item(path, name, label)
        for name, split in dataset.splits.items()
        for path, label in zip(split.paths, split.labels, strict=True)
    ]
    notes = list(dataset.notes)
    for folder in visible_dirs(dataset.root):
        if split_of(folder) == "unlabeled":
            images, others = Walk(dataset.root).images(folder)
            items += [Item(p, "unlabeled", None) for p in images]
            if others:
                notes.append(f"{folder}: ignored {len(others)} non-image file(s)")
    return dataset.root, dataset.classes, items, notes


def _read_all(
    items: list[Item], options: CheckOptions, backbone: Backbone | None, events: Events
) -> Iterator[tuple[Inspected, torch.Tensor | None]]:
    """Each file inspected once (in threads), and its features when it decodes, in item order."""
    preset = backbone.preset if backbone else IMAGENET
    resize, crop = preset.resize, preset.image_size
    events.task(f"reading {len(items)} images" + (f" (features: {backbone.name})" if backbone else ""), len(items))
    with ThreadPoolExecutor(max(1, options.workers or default_workers())) as pool:
        for start in range(0, len(items), CHUNK):
            chunk = list(pool.map(lambda it: inspect(it.path, resize, crop), items[start : start + CHUNK]))
            readable = [r.crop for r in chunk if r.crop is not None]
            feats = iter(backbone(readable)) if backbone and readable else iter(())
            for r in chunk:
                yield r, (next(feats) if r.crop is not None and backbone else None)
                r.crop = None  # the pixels are done with: only hashes and features stay
            events.advance(len(chunk))


@dataclass
class Scan:
    """Every file read once: what each is, what was found in it, and the features of the readable ones."""

    root: Path
    classes: list[str]
    items: list[Item]
    inspected: list[Inspected]
    features: torch.Tensor | None  # (readable images, D), in item order
    notes: list[str]
    seconds: dict[str, float]

    @property
    def readable(self) -> list[int]:
        return [i for i, r in enumerate(self.inspected) if r.phash is not None]

    def ref(self, i: int) -> FileRef:
        it = self.items[i]
        label = self.classes[it.label] if it.label is not None else None
        return {"path": it.path.relative_to(self.root).as_posix(), "split": it.split, "label": label}


def scan(data: str | Path, options: CheckOptions, events: Events) -> Scan:
    """The slow part, done once: every file read, hashed, inspected and (with features) run through the backbone."""
    started = time.perf_counter()
    root, classes, items, notes = dataset_items(data)
    backbone = (
        Backbone(options.backbone, options.weights, options.image_size, options.device) if options.features else None
    )
    seconds: dict[str, float] = {"setup": time.perf_counter() - started}
    t = time.perf_counter()
    inspected, features = [], []
    for r, f in _read_all(items, options, backbone, events):
        inspected.append(r)
        if f is not None:
            features.append(f)
    seconds["read"] = time.perf_counter() - t
    feats = torch.stack(features) if features else None
    return Scan(root, classes, items, inspected, feats, notes, seconds)


def check_dataset(
    data: str | Path,
    options: CheckOptions,
    events: Events,
    report: Path | None = None,
    csv_file: Path | None = None,
    out: Path | None = None,
    relabel: bool = False,
) -> CheckResult:
    """Everything `catdog check` finds in a dataset (see core/findings.py), and the files asked for: --report,
    --csv, and a cleaned copy in --out (new files and folders only; the data folder is only read)."""
    started = time.perf_counter()
    found = scan(data, options, events)
    result = assemble(found, options)
    result["seconds"]["total"] = round(time.perf_counter() - started, 2)
    if report is not None:
        result["report"] = str(write_check_report(result, report))
    if csv_file is not None:
        write_findings_csv(result, csv_file)
    if out is not None:
        files = [found.ref(i)["path"] for i in range(len(found.items))]
        result["cleaned"] = {"out": str(out), "decisions": write_clean_copy(result, files, out, relabel)}
    return result


def write_findings_csv(result: CheckResult, path: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    writer.writerows(finding_rows(result))
    return create_new(path, lambda tmp: tmp.write_text(buffer.getvalue(), encoding="utf-8", newline=""), "--csv")


def assemble(found: Scan, options: CheckOptions) -> CheckResult:
    """The findings of a scan: pairs, label suspects, problem files, balance (fast: seconds for thousands)."""
    seconds = dict(found.seconds)
    t = time.perf_counter()
    duplicates = _duplicates(found)
    seconds["duplicates"] = time.perf_counter() - t
    t = time.perf_counter()
    labels, label_check = _labels(found, options)
    seconds["labels"] = time.perf_counter() - t
    problems = _problems(found)
    counts, ratios, missing = _balance(found.items, found.classes)
    findings = Counter(f["level"] for group in (duplicates, labels, problems) for f in group)
    findings.update("warning" for _ in missing.values())
    return {
        "kind": "check",
        "data": str(found.root),
        "classes": found.classes,
        "images": len(found.items),
        "counts": counts,
        "imbalance": ratios,
        "missing": missing,
        "duplicates": duplicates,
        "labels": labels,
        "label_check": label_check,
        "problems": problems,
        "facts": dict(sorted(Counter(f for r in found.inspected for f in r.facts).items())),
        "findings": {level: findings.get(level, 0) for level in LEVELS},
        "notes": found.notes,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }


def _duplicates(found: Scan) -> list[DuplicatePair]:
    inspected, readable, items, ref = found.inspected, found.readable, found.items, found.ref
    pairs: list[Pair] = []
    same: set[tuple[int, int]] = set()
    for group in exact_groups([inspected[i].sha256 for i in readable]):
        members = [readable[g] for g in group]
        same.update((a, b) for a in members for b in members if a < b)
        pairs += [Pair(members[0], m, "exact", None, 0) for m in members[1:]]
    for p in near_pairs([inspected[i].phash for i in readable], found.features):
        i, j = readable[p.i], readable[p.j]
        if (i, j) not in same:
            pairs.append(Pair(i, j, "near", p.similarity, p.distance))
    found: list[DuplicatePair] = []
    for p in pairs:
        leak = items[p.i].split != items[p.j].split
        conflict = items[p.i].label != items[p.j].label and None not in (items[p.i].label, items[p.j].label)
        found.append(
            {
                "kind": p.kind,
                "leak": leak,
                "conflict": conflict,
                "level": "error" if leak else "warning",
                "a": ref(p.i),
                "b": ref(p.j),
                "similarity": None if p.similarity is None else round(p.similarity, 4),
                "distance": p.distance,
            }
        )
    return sorted(found, key=lambda d: (not d["leak"], d["kind"] != "exact", -(d["similarity"] or 1.0)))


def _labels(found: Scan, options: CheckOptions) -> tuple[list[LabelSuspect], LabelCheck]:
    items, readable, feats, classes, ref = found.items, found.readable, found.features, found.classes, found.ref
    labeled = [k for k, i in enumerate(readable) if items[i].label is not None]
    given = [items[readable[k]].label for k in labeled]
    folds = fold_count(given, options.folds)
    check: LabelCheck = {"ran": False, "images": len(labeled), "folds": folds, "backbone": options.backbone}
    if feats is None:
        check["why_not"] = "no backbone features (--no-features)"
        return [], check
    if folds < 2 or len(set(given)) < 2:
        check["why_not"] = "each class needs at least 2 readable images"
        return [], check
    probs = out_of_fold(feats[labeled], given, len(classes), folds, options.seed)
    check["ran"] = True
    check["oof_accuracy"] = round(float((probs.argmax(1) == torch.tensor(given)).float().mean()), 4)
    suspects: list[LabelSuspect] = []
    for s in confident_suspects(probs, given):
        r = ref(readable[labeled[s.index]])
        suspects.append(
            {
                "path": r["path"],
                "split": r["split"],
                "given": classes[given[s.index]],
                "suspected": classes[s.suspected],
                "probability": round(s.probability, 4),
                "given_probability": round(s.given_probability, 4),
                "confident": s.confident,
                "level": "warning" if s.confident else "info",
            }
        )
    return suspects, check


def _problems(found: Scan) -> list[ImageProblem]:
    problems: list[ImageProblem] = []
    for i, r in enumerate(found.inspected):
        where = found.ref(i)
        for kind, detail, level in r.problems:
            problems.append({**where, "kind": kind, "detail": detail, "level": level})
    return sorted(problems, key=lambda p: (LEVELS.index(p["level"]), PROBLEM_ORDER.index(p["kind"]), p["path"]))


def _balance(
    items: list[Item], classes: list[str]
) -> tuple[dict[str, dict[str, int]], dict[str, float], dict[str, list[str]]]:
    """Images per class per labeled split, each split's imbalance ratio, and the classes a split lacks."""
    per: dict[str, Counter] = {}
    for it in items:
        if it.label is not None:
            per.setdefault(it.split, Counter())[classes[it.label]] += 1
    counts = {split: {c: n.get(c, 0) for c in classes} for split, n in per.items()}
    ratios = {split: round(imbalance(list(c.values())), 2) for split, c in counts.items()}
    missing = {split: [c for c, n in c_.items() if n == 0] for split, c_ in counts.items()}
    return counts, ratios, {s: m for s, m in missing.items() if m}
