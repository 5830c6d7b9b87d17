"""records: the one way catdog writes JSON, strict whatever a record holds."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from catdog_cli.core.records import to_json


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
