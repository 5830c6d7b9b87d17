"""compare_rows: one column table and one sort for compare rows, whatever renders them."""

from __future__ import annotations

from catdog_cli.core.compare_rows import COMPARE_COLUMNS, sort_rows


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
