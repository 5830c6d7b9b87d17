"""Exact duplicates (the same bytes) and near-duplicates (the same picture resized, re-encoded, cropped or
recolored), within a split and across splits.

Exact: equal SHA-256. Near, with backbone features: cosine similarity at least `MIN_SIMILARITY` and perceptual
hashes at most `AGREE_DISTANCE` bits apart; without features, hashes at most `MAX_DISTANCE` apart. Measured on
catdog with injected copies (benchmarks/README.md): the hash misses 10 % crops, Lite0's features miss JPEG
quality 15, both together found all 25 copies with the fewest other pairs.
All pairs are compared (N^2/2 dot products, in blocks): 2,000 images take well under a second.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

MIN_SIMILARITY = 0.80  # cosine of unit-length backbone features: the same picture, altered
# of 64 pHash bits, with features: a 10 % crop moved it up to 14 bits; another photo of the same cat, same shoot,
# 16 (benchmarks/README.md, check_faults.py); unrelated photos are ~32 apart
AGREE_DISTANCE = 15
MAX_DISTANCE = 10  # of 64 pHash bits, without features: the same picture, resized or re-encoded
BLOCK = 2048  # rows compared at once: memory stays BLOCK x N floats


@dataclass(frozen=True)
class Pair:
    i: int
    j: int
    kind: str  # "exact" or "near"
    similarity: float | None
    distance: int | None


def exact_groups(digests: list[str]) -> list[list[int]]:
    """Indices of files with the same content, each group in input order, groups by their first member."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, digest in enumerate(digests):
        groups[digest].append(i)
    return [g for g in groups.values() if len(g) > 1]


def hash_bits(hashes: list[int]) -> torch.Tensor:
    """(N, 64) float 0/1 bits of 64-bit perceptual hashes."""
    shifts = torch.arange(64, dtype=torch.int64)
    values = torch.tensor([h - (1 << 64) if h >= 1 << 63 else h for h in hashes], dtype=torch.int64)
    return ((values[:, None] >> shifts) & 1).float()


def close_pairs(close_block, n: int) -> list[tuple[int, int]]:
    """(i, j), i < j, where close_block(start, stop) (a boolean block of the pairwise matrix, rows start:stop) holds;
    the matrix is made BLOCK rows at a time."""
    found = []
    for start in range(0, n, BLOCK):
        rows, cols = torch.nonzero(close_block(start, min(n, start + BLOCK)), as_tuple=True)
        rows = rows + start
        upper = cols > rows
        found += list(zip(rows[upper].tolist(), cols[upper].tolist(), strict=True))
    return found


def near_pairs(
    hashes: list[int],
    features: torch.Tensor | None,
    min_similarity: float = MIN_SIMILARITY,
    agree_distance: int = AGREE_DISTANCE,
    max_distance: int = MAX_DISTANCE,
) -> list[Pair]:
    """Near-duplicate pairs among readable images (positions in `hashes`, the same order as `features`). With
    features: cosine at least `min_similarity` and hashes at most `agree_distance` apart (both signals agree);
    without: hashes at most `max_distance` apart. Each pair carries both measures where both exist."""
    bits = hash_bits(hashes)
    if features is not None:

        def close(a: int, b: int) -> torch.Tensor:
            return (features[a:b] @ features.T >= min_similarity) & (hamming_block(bits, a, b) <= agree_distance)

    else:

        def close(a: int, b: int) -> torch.Tensor:
            return hamming_block(bits, a, b) <= max_distance

    found = []
    for i, j in close_pairs(close, len(hashes)):
        distance = int((bits[i] != bits[j]).sum())
        similarity = float(features[i] @ features[j]) if features is not None else None
        found.append(Pair(i, j, "near", similarity, distance))
    return found


def hamming_block(bits: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Hamming distances of rows start:stop to every row, as counts: |a| + |b| - 2 a.b."""
    ones = bits.sum(1)
    return (ones[start:stop, None] + ones[None, :] - 2 * bits[start:stop] @ bits.T).round()


def copies_across(splits: dict[str, list[Path]]) -> list[tuple[Path, Path]]:
    """(file, an earlier split's file with the same bytes) for every byte-identical copy across splits. Cheap enough
    for every training run: only files whose size a file of another split shares are read and hashed."""
    by_size: dict[int, list[tuple[str, Path]]] = defaultdict(list)
    for split, paths in splits.items():
        for p in paths:
            with contextlib.suppress(OSError):  # an unreadable file is decoding's to name
                by_size[p.stat().st_size].append((split, p))
    found = []
    for same_size in by_size.values():
        if len({split for split, _ in same_size}) < 2:
            continue
        first: dict[str, tuple[str, Path]] = {}
        for split, p in same_size:
            with contextlib.suppress(OSError):
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                if digest not in first:
                    first[digest] = (split, p)
                elif first[digest][0] != split:
                    found.append((p, first[digest][1]))
    return found


def cross_split_note(splits: dict[str, list[Path]], data: str | Path) -> str | None:
    """One line for `catdog train` when val (or test) holds byte-identical copies of training images."""
    copies = copies_across(splits)
    if not copies:
        return None
    copy, original = copies[0]
    return (
        f"{len(copies)} image(s) are byte-identical copies across splits ({copy} = {original}): val accuracy counts "
        f"them as unseen; run `catdog check {data}` for these and near-duplicates"
    )
