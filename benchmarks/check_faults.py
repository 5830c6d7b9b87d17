"""`catdog check` on a copy of a dataset with injected faults (issue 23): does it find them, and how fast.

Faults: `--flip` of the train labels flipped (one set per seed, applied to the scanned labels: the pixels are the
same files), `--copies` val images copied into train per kind of copy (exact, resized to half, re-encoded at JPEG
quality 15, cropped 10 %, color-shifted), and `--placeholders` made-up placeholder images. The copy is made with
hard links (the input is never written) in `--work`.

Prints one JSON document: the time of the whole check (scan + findings) beside a hash-only check (the baseline:
`--no-features`), leak recall per kind of copy and false pairs, the near-duplicate methods side by side
(perceptual-hash distance vs feature cosine, at several thresholds), label-flip recall in the top 2N suspects per
seed, placeholders found, and what the check finds in the data itself (pairs and problems not injected, suspects
without flips).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageEnhance

from catdog_cli.checks.duplicates import hamming_block, hash_bits
from catdog_cli.checks.runner import CheckOptions, Item, assemble, scan
from catdog_cli.core.events import Events

KINDS = ("exact", "resized", "reencoded", "cropped", "color")


def copy_as(src: Path, dest: Path, kind: str) -> None:
    if kind == "exact":
        shutil.copyfile(src, dest)
        return
    im = Image.open(src).convert("RGB")
    if kind == "resized":
        im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR).save(dest, quality=90)
    elif kind == "reencoded":
        im.save(dest, quality=15)
    elif kind == "cropped":
        dx, dy = im.width // 20, im.height // 20  # 5 % off each side: 10 % of each dimension
        im.crop((dx, dy, im.width - dx, im.height - dy)).save(dest, quality=90)
    else:
        ImageEnhance.Color(ImageEnhance.Brightness(im).enhance(1.25)).enhance(1.4).save(dest, quality=90)


def placeholder(path: Path, k: int) -> None:
    """Made-up placeholders of the kinds the web serves: a gray card with words, blank white, blank black."""
    size = [(300, 300), (400, 300), (250, 250), (640, 480), (200, 150)][k % 5]
    background = [(235, 235, 235), (255, 255, 255), (0, 0, 0), (245, 245, 240), (220, 220, 220)][k % 5]
    im = Image.new("RGB", size, background)
    if k % 5 in (0, 3, 4):
        draw = ImageDraw.Draw(im)
        draw.text((size[0] // 5, size[1] // 2), "IMAGE NOT AVAILABLE", fill=(90, 90, 90))
        draw.rectangle((size[0] // 3, size[1] // 5, 2 * size[0] // 3, size[1] // 3), outline=(150, 150, 150))
    im.save(path)


def inject(data: Path, work: Path, copies: int, placeholders: int, seed: int) -> tuple[Path, list, list]:
    """A hard-linked copy of data with leaks and placeholders; (folder, [(kind, copy, original)], [placeholders])."""
    out = work / "faulted"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(data, out, copy_function=os.link)
    rng = random.Random(seed)
    val = sorted(p for p in (out / "val").rglob("*.jpg"))
    chosen = rng.sample(val, copies * len(KINDS))
    leaks = []
    for n, src in enumerate(chosen):
        kind = KINDS[n % len(KINDS)]
        dest = out / "train" / src.parent.name / f"leak_{kind}_{src.stem}.jpg"
        copy_as(src, dest, kind)
        leaks.append((kind, dest.relative_to(out).as_posix(), src.relative_to(out).as_posix()))
    classes = sorted(p.name for p in (out / "train").iterdir())
    fakes = []
    for k in range(placeholders):
        # a neutral name: a file named like a placeholder is left out by its name before any check reads its pixels
        dest = out / "train" / classes[k % len(classes)] / f"stock{k}{['.gif', '.png', '.jpg'][k % 3]}"
        placeholder(dest, k)
        fakes.append(dest.relative_to(out).as_posix())
    return out, leaks, fakes


def flipped(found, fraction: float, seed: int, exclude: set[str]) -> tuple[object, set[str]]:
    """The scan with `fraction` of the train labels flipped to another class; the flipped paths."""
    rng = random.Random(seed)
    train = [i for i, it in enumerate(found.items) if it.split == "train" and found.ref(i)["path"] not in exclude]
    chosen = rng.sample(train, round(fraction * len(train)))
    items = list(found.items)
    k = len(found.classes)
    for i in chosen:
        items[i] = Item(items[i].path, items[i].split, (items[i].label + rng.randrange(1, k)) % k)
    return dataclasses.replace(found, items=items), {found.ref(i)["path"] for i in chosen}


def methods(found, leaks: list) -> dict:
    """Near-duplicate recall per kind of copy and false pairs (pairs not injected: some may be real duplicates of
    the data itself), by hash distance, by feature cosine, and by both together."""
    readable = found.readable
    pos = {found.ref(i)["path"]: r for r, i in enumerate(readable)}
    injected = {(min(pos[a], pos[b]), max(pos[a], pos[b])): kind for kind, a, b in leaks}
    bits = hash_bits([found.inspected[i].phash for i in readable])
    dist = hamming_block(bits, 0, len(readable))
    cos = found.features @ found.features.T
    upper = torch.triu(torch.ones_like(cos, dtype=torch.bool), diagonal=1)
    negatives = upper.clone()
    for a, b in injected:
        negatives[a, b] = False

    def table(matrix, thresholds, close):
        rows = {}
        for t in thresholds:
            hit = close(matrix, t)
            per_kind = {
                kind: sum(bool(hit[a, b]) for (a, b), k in injected.items() if k == kind)
                / sum(k == kind for k in injected.values())
                for kind in KINDS
            }
            rows[str(t)] = {"recall": per_kind, "false_pairs": int((hit & negatives).sum())}
        return rows

    return {
        "phash_distance_at_most": table(dist, (4, 6, 8, 10, 12, 14, 16), lambda m, t: m <= t),
        "cosine_at_least": table(cos, (0.8, 0.85, 0.88, 0.9, 0.92, 0.95), lambda m, t: m >= t),
        "cosine_at_least_and_distance_at_most": table(
            None,
            [(c, d) for c in (0.8, 0.85, 0.88, 0.9) for d in (12, 14, 15, 16, 20, 24)],
            lambda _, t: (cos >= t[0]) & (dist <= t[1]),
        ),
        "pairs_compared": int(upper.sum()),
        # how far the injected copies strayed: the margin each limit leaves
        "injected_extremes": {
            kind: {
                "largest_distance": max(int(dist[a, b]) for (a, b), k in injected.items() if k == kind),
                "lowest_cosine": round(min(float(cos[a, b]) for (a, b), k in injected.items() if k == kind), 4),
            }
            for kind in KINDS
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a fetched catdog: train/<class>, val/<class>")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--backbone", default="timm:tf_efficientnet_lite0")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--flip", type=float, default=0.05)
    ap.add_argument("--copies", type=int, default=5, help="val images copied into train per kind of copy")
    ap.add_argument("--placeholders", type=int, default=5)
    ap.add_argument("--save-scan", type=Path, help="keep the scans here (torch.save) for --from-scan")
    ap.add_argument("--from-scan", type=Path, help="skip injecting and scanning: the findings of a saved scan")
    args = ap.parse_args()
    load = os.getloadavg()
    options = CheckOptions(args.backbone, args.weights, args.image_size, "cpu")
    if args.from_scan:
        saved = torch.load(args.from_scan, weights_only=False)
    else:
        folder, leaks, fakes = inject(args.data, args.work, args.copies, args.placeholders, seed=0)
        t = time.perf_counter()
        baseline_scan = scan(folder, dataclasses.replace(options, features=False), Events())
        baseline_seconds = time.perf_counter() - t
        t = time.perf_counter()
        found = scan(folder, options, Events())
        scan_seconds = time.perf_counter() - t
        saved = {
            "baseline_scan": baseline_scan,
            "scan": found,
            "leaks": leaks,
            "fakes": fakes,
            "seconds": {"baseline_scan": baseline_seconds, "scan": scan_seconds},
            "load_before": load,
        }
        if args.save_scan:
            torch.save(saved, args.save_scan)
    found, leaks, fakes, load = saved["scan"], saved["leaks"], saved["fakes"], saved["load_before"]
    t = time.perf_counter()
    baseline = assemble(saved["baseline_scan"], options)
    baseline_seconds = saved["seconds"]["baseline_scan"] + time.perf_counter() - t
    t = time.perf_counter()
    clean = assemble(found, options)
    check_seconds = saved["seconds"]["scan"] + time.perf_counter() - t

    pairs = {frozenset((d["a"]["path"], d["b"]["path"])): d for d in clean["duplicates"]}
    leak_found = {kind: 0 for kind in KINDS}
    for kind, a, b in leaks:
        d = pairs.get(frozenset((a, b)))
        leak_found[kind] += bool(d and d["leak"])
    injected_paths = {a for _, a, _ in leaks} | set(fakes)
    own_pairs = [d for d in clean["duplicates"] if not ({d["a"]["path"], d["b"]["path"]} & injected_paths)]
    hash_pairs = {frozenset((d["a"]["path"], d["b"]["path"])) for d in baseline["duplicates"]}
    problems = {p["path"]: p for p in clean["problems"]}

    seeds = []
    for seed in (int(s) for s in args.seeds.split(",")):
        t = time.perf_counter()
        noisy, flips = flipped(found, args.flip, seed, injected_paths)
        result = assemble(noisy, options)
        top = {s["path"] for s in result["labels"][: 2 * len(flips)]}
        seeds.append(
            {
                "seed": seed,
                "flipped": len(flips),
                "found_in_top_2n": len(flips & top),
                "recall_top_2n": len(flips & top) / len(flips),
                "suspects": len(result["labels"]),
                "found_among_all_suspects": len(flips & {s["path"] for s in result["labels"]}),
                "oof_accuracy": result["label_check"]["oof_accuracy"],
                "seconds": round(time.perf_counter() - t, 2),
            }
        )
    report = {
        "machine": f"{os.cpu_count()} CPUs, load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f}",
        "torch_threads": torch.get_num_threads(),
        "images": clean["images"],
        "backbone": args.backbone,
        "seconds": {
            "check": round(check_seconds, 1),
            "check_stages": clean["seconds"],
            "baseline_hash_only": round(baseline_seconds, 1),
        },
        "leaks": {
            "injected_per_kind": args.copies,
            "found_per_kind": leak_found,
            "found_by_hash_only": sum(frozenset((a, b)) in hash_pairs for _, a, b in leaks),
        },
        "pairs_not_injected": own_pairs,
        "methods": methods(found, leaks),
        "placeholders": {
            "injected": len(fakes),
            "found": sum(f in problems and problems[f]["kind"] in ("placeholder", "constant") for f in fakes),
        },
        "problems_not_injected": [p for p in clean["problems"] if p["path"] not in injected_paths],
        "labels_by_seed": seeds,
        "suspects_without_flips": clean["labels"][:30],
        "suspects_without_flips_count": len(clean["labels"]),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
