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


def test_export_summary_lists_the_decode_steps_one_per_line_in_order():
    """The steps were printed as a Python list (brackets, quotes, one endless line): now numbered, one a line."""
    steps = ["open the file with Pillow", "convert to RGB", "center-crop 224x224"]
    result = {
        "checkpoint": "runs/train/best.pt",
        "format": "onnx",
        "out": "runs/train/best.onnx",
        "bytes": 15_000_000,
        "metadata": {
            "input": {"name": "images", "dtype": "uint8", "channels": "RGB", "layout": "NHWC", "shape": ["batch", 224]},
            "preprocessing": {"steps": steps, "in_graph": "x / 255"},
            "temperature": 0.7,
            "output": {"name": "probabilities"},
            "classes": ["ants", "bees"],
        },
        "parity": {"images": 32, "source": "val", "max_abs_diff": 1e-6, "tolerance": 1e-4, "label_agreement": 1.0},
    }
    lines = printed(render.export_summary(result), 100)
    shown = [next(n for n, line in enumerate(lines) if f"{i}. {step}" in line) for i, step in enumerate(steps, 1)]
    assert shown == sorted(shown) and len(set(shown)) == 3  # in order, each on its own line
    assert not any("['" in line or '["' in line for line in lines)
