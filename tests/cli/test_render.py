"""Rich tables of what the engine returns: a run's summary table."""

from __future__ import annotations

from helpers import printed

from catdog_cli.cli import render


def test_train_summary_after_a_stop_before_the_first_epoch_and_weights_in_words():
    result = {
        "config": {"backbone": "resnet18", "weights": "none", "strategy": "freeze"},
        "params": {"total": 11_177_538, "trainable": 1_026},
        "classes": ["a", "b"],
        "split_origin": "folders",
        "device": "cpu",
        "precision": "fp32",
        "epochs": 0,
        "best_val_acc": None,
        "best_epoch": 0,
        "skipped": [],
        "out": "runs/train",
    }
    text = "\n".join(printed(render.train_summary(result), 100))
    assert "resnet18 (random init)" in text
    assert "none: stopped before the first epoch ended" in text and "(epoch 0)" not in text
