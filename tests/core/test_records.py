"""records: one column table and one sort for compare rows, whatever renders them."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from catdog_cli.core.records import COMPARE_COLUMNS, sort_rows, to_json


def _row(backbone: str, strategy: str, acc: float | None, status: str = "ok") -> dict:
    return {"backbone": backbone, "strategy": strategy, "status": status, "best_val_acc": acc}


def test_rows_sort_by_val_accuracy_then_backbone_with_failures_last():
    rows = [
        _row("vgg", "freeze", 0.81),
        _row("alexnet", "finetune", None, "failed"),
        _row("resnet", "freeze", 0.93),
        _row("alexnet", "freeze", 0.81),
        _row("densenet", "finetune", 0.62),
        _row("resnet", "finetune", 0.97),
    ]
    ranked = [(r["backbone"], r["strategy"]) for r in sort_rows(rows)]
    assert ranked == [
        ("resnet", "finetune"),
        ("resnet", "freeze"),
        ("alexnet", "freeze"),
        ("vgg", "freeze"),
        ("densenet", "finetune"),
        ("alexnet", "finetune"),
    ]


def test_equal_accuracies_of_one_backbone_keep_grid_order():
    rows = [_row("resnet", "freeze", 0.5), _row("resnet", "finetune", 0.5), _row("resnet", "discriminative", 0.5)]
    assert [r["strategy"] for r in sort_rows(rows)] == ["freeze", "finetune", "discriminative"]


def test_columns_format_by_kind():
    by_key = {c.key: c for c in COMPARE_COLUMNS}
    assert by_key["best_val_acc"].format(0.9755) == "97.5%"
    assert by_key["params_total"].format(21_285_698) == "21.29 M"
    assert by_key["params_trainable"].format(1_539) == "1,539"
    assert by_key["train_seconds"].format(12.34) == "12.3 s"
    # img/s read alike whatever their size: one decimal below 100 (6.1 next to 63.2), whole above
    assert [by_key["images_per_sec"].format(v) for v in (6.084, 63.19, 1234.5)] == ["6.1", "63.2", "1,234"]
    assert by_key["backbone"].format("resnet34") == "resnet34" and by_key["test_acc"].format(None) == "—"
    assert [c.key for c in COMPARE_COLUMNS][:3] == ["backbone", "strategy", "best_val_acc"]  # what matters first


def _random_value(rng: random.Random, depth: int = 0):
    """Anything a record can hold: numbers (NaN and infinities too), names that are not UTF-8, paths, nesting."""
    leaves = [
        lambda: rng.choice([float("nan"), float("inf"), -float("inf"), rng.random(), 0.0, -0.0]),
        lambda: rng.randint(-(10**12), 10**12),
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: os.fsdecode(bytes(rng.randrange(256) for _ in range(rng.randint(0, 6)))),
        lambda: Path(os.fsdecode(b"runs/\xff" + bytes([rng.randrange(128, 256)]))),
        lambda: rng.choice(["\udcff", "plain", "é 猫", "a\nb", "\x1b[31m"]),
    ]
    if depth < 3 and rng.random() < 0.4:
        items = [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
        if rng.random() < 0.5:
            return items
        return {os.fsdecode(bytes([rng.randrange(256)])) + str(i): v for i, v in enumerate(items)}
    return rng.choice(leaves)()


def _reject(token: str):
    raise AssertionError(f"{token} is not JSON")


@pytest.mark.parametrize("seed", range(40))
def test_to_json_is_strict_json_whatever_a_record_holds(seed):
    value = {"record": _random_value(random.Random(seed)), "nan": float("nan"), "name": os.fsdecode(b"chat\xff")}
    text = to_json(value)
    text.encode("utf-8")  # no lone surrogates: any UTF-8 consumer reads it
    parsed = json.loads(text, parse_constant=_reject)  # NaN, Infinity, -Infinity are refused by a strict parser
    assert parsed["nan"] is None and parsed["name"] == "chat\\xff"
