"""checks/duplicates.py: exact groups and near pairs, by features or by perceptual hash."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from catdog_cli.checks.duplicates import (
    MIN_SIMILARITY,
    copies_across,
    cross_split_note,
    exact_groups,
    hash_bits,
    near_pairs,
)


def test_exact_groups_in_input_order():
    assert exact_groups(["a", "b", "a", "c", "b", "a"]) == [[0, 2, 5], [1, 4]]
    assert exact_groups(["a", "b"]) == []


def test_hash_bits_of_the_top_bit():
    bits = hash_bits([1, 1 << 63, (1 << 64) - 1])
    assert bits[0].tolist() == [1.0] + [0.0] * 63
    assert bits[1].tolist() == [0.0] * 63 + [1.0]
    assert bits[2].sum() == 64


def test_near_pairs_by_hash_distance_without_features():
    hashes = [0, 0b111, (1 << 64) - 1, 0b1]  # 0~3 (1 bit), 0~1 (3 bits), 2 is far from all
    pairs = near_pairs(hashes, None, max_distance=3)
    assert {(p.i, p.j, p.distance) for p in pairs} == {(0, 1, 3), (0, 3, 1), (1, 3, 2)}
    assert all(p.kind == "near" and p.similarity is None for p in pairs)


def test_near_pairs_by_features_across_blocks(monkeypatch):
    monkeypatch.setattr("catdog_cli.checks.duplicates.BLOCK", 3)  # pairs that straddle two blocks are found too
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(8, 32, generator=g)
    feats[6] = feats[1] + 0.05 * torch.randn(32, generator=g)
    feats = F.normalize(feats, dim=1)
    pairs = near_pairs(list(range(8)), feats)
    assert [(p.i, p.j) for p in pairs] == [(1, 6)]
    assert pairs[0].similarity >= MIN_SIMILARITY


def test_copies_across_splits_by_bytes_only(tmp_path):
    a, b, c = (tmp_path / n for n in ("a.png", "b.png", "c.png"))
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    c.write_bytes(b"same size!")  # same size as a, other bytes: hashed, not a copy
    inside = tmp_path / "d.png"
    inside.write_bytes(b"same bytes")  # a copy within train: not across splits
    assert copies_across({"train": [a, inside], "val": [b, c]}) == [(b, a)]
    assert copies_across({"train": [a], "val": [c]}) == []
    assert cross_split_note({"train": [a], "val": [c]}, "data") is None
    note = cross_split_note({"train": [a], "val": [b]}, "data")
    assert note.startswith("1 image(s) are byte-identical copies across splits") and "catdog check data" in note


def test_with_features_the_hash_must_agree():
    feats = F.normalize(torch.ones(3, 8), dim=1)  # three identical feature vectors: cosine 1 everywhere
    far = (1 << 40) - 1  # 40 bits away from 0: another picture that a backbone happens to see alike
    pairs = near_pairs([0, 0b11, far], feats)
    assert [(p.i, p.j, p.distance) for p in pairs] == [(0, 1, 2)]
