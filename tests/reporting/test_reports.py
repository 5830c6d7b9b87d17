"""HTML reports: structure, numbers equal to the run's JSON, self-containment, thumbnails, and a real browser."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from PIL import Image

from catdog_cli.core.formatting import fmt
from catdog_cli.inference import calibration
from catdog_cli.reporting.compare_report import METRIC_COLUMNS, write_compare_report
from catdog_cli.reporting.run_report import write_train_report

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
CLASSES = ["ants", "bees", "<wasps & co>"]


class Page(HTMLParser):
    """Parses a report once: tag balance, charts and their marks, table cells, images, every attribute value."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict]] = []
        self.errors: list[str] = []
        self.charts: list[dict] = []
        self.tables: list[list[list[str]]] = []
        self.imgs: list[dict] = []
        self.attr_values: list[str] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {[t for t, _ in self.stack]}")

    def _inside(self, tag: str) -> bool:
        return any(t == tag for t, _ in self.stack)

    def _see(self, tag: str, attrs: dict) -> None:
        self.attr_values += [v for v in attrs.values() if v]
        if tag == "svg" and "chart" in attrs.get("class", "").split():
            self.charts.append({"figure": attrs["data-figure"], "marks": [], "text": []})
        elif self._inside("svg"):
            self.charts[-1]["marks"].append((tag, set(attrs.get("class", "").split())))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.tables[-1][-1].append("")
        elif tag == "img":
            self.imgs.append(attrs)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self._see(tag, dict(attrs))
        if tag not in VOID:
            self.stack.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self._see(tag, dict(attrs))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1][0] != tag:
            self.errors.append(f"</{tag}> does not close {self.stack[-1][0] if self.stack else 'anything'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self._inside("style"):
            return
        self.text.append(data)
        if self._inside("svg"):
            self.charts[-1]["text"].append((self.stack[-1][0], set(self.stack[-1][1].get("class", "").split()), data))
        if self._inside("td") or self._inside("th"):
            self.tables[-1][-1][-1] += data

    def figures(self, name: str) -> list[dict]:
        return [c for c in self.charts if c["figure"] == name]

    def chart(self, name: str) -> dict:
        (found,) = self.figures(name)
        return found

    def table_with(self, first_header: str) -> list[list[str]]:
        """The table whose header row starts with this heading, without its header row."""
        (found,) = [t for t in self.tables if t and t[0] and t[0][0] == first_header]
        return found[1:]


def marks(chart: dict, tag: str, cls: str) -> list:
    return [m for m in chart["marks"] if m[0] == tag and cls in m[1]]


def texts(chart: dict, tag: str, cls: str = "") -> list[str]:
    return [t for tg, c, t in chart["text"] if tg == tag and (not cls or cls in c)]


def parse(path: Path) -> Page:
    page = Page(path.read_text(encoding="utf-8"))
    assert page.errors == []
    return page


def photo(path: Path, size: tuple[int, int], **save: object) -> Path:
    """A smooth synthetic picture (compresses like a photo) with a shape on it."""
    img = Image.radial_gradient("L").resize(size).convert("RGB")
    img.paste((200, 120, 40), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    img.save(path, **save)
    return path


@pytest.fixture
def train_run(tmp_path: Path) -> dict:
    exif = Image.Exif()
    exif[0x0112] = 6  # camera held sideways: the upright picture is portrait
    noise = Image.effect_noise((1200, 900), 120).convert("RGB")
    noise.save(tmp_path / "noise.jpg", quality=95)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    history = [
        {
            "epoch": e,
            "train_loss": round(0.9 / e, 4),
            "train_acc": round(0.55 + 0.04 * e, 4),
            "val_loss": round(0.7 / e + 0.02 * e, 4),
            "val_acc": round(0.6 + 0.03 * e, 4),
            "lr": 0.001 if e < 5 else 0.0001,
            "seconds": 3.2 + e / 10,
        }
        for e in range(1, 8)
    ]
    history[2]["val_loss"] = float("nan")  # a diverged batch must not break the chart
    return {
        "kind": "train",
        "config": {
            "backbone": "resnet34",
            "strategy": "freeze",
            "weights": "default",
            "image_size": 224,
            "epochs": 7,
            "batch_size": 32,
            "lr": 0.001,
            "lr_ratio": 10,
            "device": "cpu",
            "seed": 0,
            "data": "/data/hymenoptera",
        },
        "versions": {"catdog": "0.1.0", "torch": "2.14.1", "torchvision": "0.29.1", "python": "3.11.7"},
        "classes": CLASSES,
        "params": {"total": 21285698, "trainable": 1539},
        "history": history,
        "best_epoch": 6,
        "best_val_acc": 0.78,
        "evaluation": {
            "split": "val",
            "checkpoint": "best.pt",
            "num_images": 153,
            "accuracy": 0.7843,
            "loss": 0.5012,
            "per_class": [
                {"class": "ants", "precision": 0.8125, "recall": 0.7429, "f1": 0.7761, "support": 70},
                {"class": "bees", "precision": 0.7619, "recall": 0.8533, "f1": 0.805, "support": 75},
                {"class": "<wasps & co>", "precision": 0.5, "recall": 0.375, "f1": 0.4286, "support": 8},
            ],
            "confusion": [[52, 16, 2], [10, 64, 1], [2, 3, 3]],
        },
        "top_losses": [
            {
                "path": str(photo(tmp_path / "side.jpg", (400, 200), exif=exif)),
                "true": "ants",
                "pred": "bees",
                "confidence": 0.9731,
                "loss": 3.6154,
            },
            {"path": str(tmp_path / "noise.jpg"), "true": "bees", "pred": "ants", "confidence": 0.91, "loss": 2.41},
            {
                "path": str(photo(tmp_path / "small.png", (60, 40))),
                "true": "<wasps & co>",
                "pred": "bees",
                "confidence": 0.88,
                "loss": 2.1203,
            },
            {
                "path": str(tmp_path / "gone.jpg"),
                "true": "bees",
                "pred": "<wasps & co>",
                "confidence": 0.8,
                "loss": 1.61,
            },
            {"path": str(tmp_path / "broken.jpg"), "true": "ants", "pred": "bees", "confidence": 0.75, "loss": 1.39},
        ],
        "out": "runs/train3",
    }


@pytest.fixture
def compare_result() -> dict:
    def cell(backbone: str, strategy: str, acc: float, trainable: int, seconds: float, **kw: object) -> dict:
        row = {
            "backbone": backbone,
            "strategy": strategy,
            "status": "ok",
            "error": None,
            "params_total": {"resnet18": 11177538, "resnet34": 21285698, "mobilenet_v3_small": 1519906}[backbone],
            "params_trainable": trainable,
            "best_val_acc": acc,
            "best_epoch": 3,
            "val_loss": round(1 - acc, 3),
            "test_acc": None,
            "train_seconds": seconds,
            "images_per_sec": round(244 * 3 / seconds, 1),
            "history": [
                {
                    "epoch": e,
                    "val_acc": round(acc - 0.1 / e, 4),
                    "val_loss": 0.5 / e,
                    "train_loss": 0.6 / e,
                    "train_acc": 0.7,
                }
                for e in (1, 2, 3)
            ],
        }
        return {**row, **kw}

    def failed(strategy: str, error: str | None, history: list[dict]) -> dict:
        return {
            "backbone": "resnet34",
            "strategy": strategy,
            "status": "failed",
            "error": error,
            "params_total": 21285698,
            "params_trainable": 21285698,
            "best_val_acc": None,
            "best_epoch": None,
            "val_loss": None,
            "test_acc": None,
            "train_seconds": None,
            "images_per_sec": None,
            "history": history,
        }

    return {
        "kind": "compare",
        "config": {
            "data": "/data/hymenoptera",
            "epochs": 3,
            "image_size": 224,
            "weights": "default",
            "device": "cuda",
            "seed": 0,
        },
        "versions": {"catdog": "0.1.0", "torch": "2.14.1", "torchvision": "0.29.1", "python": "3.11.7"},
        "rows": [
            cell("resnet18", "freeze", 0.8889, 1026, 9.8),
            cell("resnet18", "finetune", 0.9346, 11177538, 14.2, test_acc=0.921),
            cell("resnet34", "freeze", 0.9085, 1026, 12.5),
            cell("mobilenet_v3_small", "freeze", 0.8301, 2050, 6.1),
            cell("mobilenet_v3_small", "finetune", 0.8627, 1519906, 7.4),
            failed(
                "finetune",
                "CUDA out of memory <tried 2.00 GiB>",
                [{"epoch": 1, "val_acc": 0.7, "val_loss": 0.6, "train_loss": 0.7, "train_acc": 0.6}],
            ),
            failed("discriminative", None, []),
        ],
    }


# ---------------------------------------------------------------- train / evaluate


def test_fmt_is_the_one_way_numbers_are_shown() -> None:
    assert [fmt(0.91234, "pct"), fmt(21285698, "int"), fmt(12.53, "sec"), fmt(0.001), fmt(3.61538)] == [
        "91.2%", "21,285,698", "12.5 s", "0.001", "3.615",
    ]  # fmt: skip
    assert fmt(None, "pct") == "—" and fmt(float("nan")) == "nan"
    # a rate: one decimal below 100, so 6.1 and 63.2 read alike (not 6.084 beside 63.19); whole above
    assert [fmt(6.084, "rate"), fmt(63.19, "rate"), fmt(1234.7, "rate")] == ["6.1", "63.2", "1,235"]
    assert [fmt(0.517, "loss"), fmt(0.74812, "loss")] == ["0.5170", "0.7481"]  # losses line up in a column


def test_train_report_has_one_chart_per_figure_with_a_mark_per_number(train_run: dict, tmp_path: Path) -> None:
    page = parse(write_train_report(train_run, tmp_path / "report.html"))
    assert sorted(c["figure"] for c in page.charts) == ["accuracy", "confusion", "loss"]
    epochs = len(train_run["history"])
    loss, acc = page.chart("loss"), page.chart("accuracy")
    assert len(marks(loss, "circle", "pt")) == 2 * epochs - 1  # the NaN val loss is not drawn
    assert len(marks(acc, "circle", "pt")) == 2 * epochs
    assert len(marks(loss, "path", "line")) == len(marks(acc, "path", "line")) == 2
    expected_tips = {f"epoch {h['epoch']}: train acc {fmt(h['train_acc'], 'pct')}" for h in train_run["history"]}
    assert expected_tips <= set(texts(acc, "title"))
    n = len(CLASSES)
    confusion = page.chart("confusion")
    assert len(marks(confusion, "rect", "cell")) == n * n
    assert texts(confusion, "text", "count") == [str(v) for row in train_run["evaluation"]["confusion"] for v in row]


def test_train_report_numbers_equal_the_json(train_run: dict, tmp_path: Path) -> None:
    page = parse(write_train_report(train_run, tmp_path / "report.html"))
    ev = train_run["evaluation"]
    assert page.table_with("class") == [
        [r["class"], fmt(r["precision"], "pct"), fmt(r["recall"], "pct"), fmt(r["f1"], "pct"), fmt(r["support"], "int")]
        for r in ev["per_class"]
    ]
    assert page.table_with("epoch") == [
        [
            fmt(h["epoch"], "int"),
            fmt(h["train_loss"]),
            fmt(h["train_acc"], "pct"),
            fmt(h["val_loss"]),
            fmt(h["val_acc"], "pct"),
            fmt(h["lr"]),
            fmt(h["seconds"], "sec"),
        ]
        for h in train_run["history"]
    ]
    config_rows = dict(map(tuple, page.tables[-2]))
    for key, value in train_run["config"].items():
        shown = value if isinstance(value, str) else fmt(value, "int" if isinstance(value, int) else "num")
        assert config_rows[key] == shown
    assert config_rows["parameters trainable"] == fmt(train_run["params"]["trainable"], "int") == "1,539"
    assert dict(map(tuple, page.tables[-1])) == train_run["versions"]
    text = " ".join(" ".join(page.text).split())
    for shown in (
        fmt(train_run["best_val_acc"], "pct"),
        f"at epoch {train_run['best_epoch']} of 7",
        f"accuracy on val split {fmt(ev['accuracy'], 'pct')}",
        f"loss {fmt(ev['loss'])}",
        f"{fmt(ev['num_images'], 'int')} images",
        "checkpoint best.pt",
        fmt(train_run["params"]["total"], "int"),
        *(f"confidence {fmt(t['confidence'], 'pct')} · loss {fmt(t['loss'])}" for t in train_run["top_losses"]),
        # each file's name printed under it (a tooltip alone is invisible on a phone and on paper)
        *(f"loss {fmt(t['loss'])} {Path(t['path']).name}" for t in train_run["top_losses"]),
    ):
        assert shown in text


def test_train_report_shows_calibration_with_a_reliability_diagram(train_run: dict, tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 3, generator=generator) * 5  # over-confident: labels drawn at T = 2.5
    labels = torch.multinomial((logits / 2.5).softmax(1), 1, generator=generator).squeeze(1)
    cal = calibration.calibrate(logits, labels)
    page = parse(write_train_report({**train_run, "calibration": cal}, tmp_path / "report.html"))
    chart = page.chart("reliability")
    bins = len(cal["reliability_before"]) + len(cal["reliability_after"])
    assert len(marks(chart, "circle", "pt")) == bins + 2  # each bin before and after, and the diagonal's ends
    assert len(marks(chart, "path", "line")) == 3
    first = cal["reliability_after"][0]
    assert (
        f"calibrated (T = {fmt(cal['temperature'])}), confidence {fmt(first['lo'], 'pct')}–"
        f"{fmt(first['hi'], 'pct')}: {first['count']} images"
    ) in " ".join(texts(chart, "title"))
    assert page.table_with("confidence ≥") == [
        [fmt(c["threshold"]), fmt(c["images"], "int"), fmt(c["coverage"], "pct"), fmt(c["accuracy"], "pct")]
        for c in cal["coverage"]
    ]
    text = " ".join(" ".join(page.text).split())
    assert f"expected calibration error {fmt(cal['ece_before'], 'pct')} → {fmt(cal['ece_after'], 'pct')}" in text
    assert "the calibrated figure is optimistic" in text  # measured on the images T was fitted on


def test_thumbnails_are_small_upright_embedded_jpegs(train_run: dict, tmp_path: Path) -> None:
    page = parse(write_train_report(train_run, tmp_path / "report.html"))
    srcs = [img["src"] for img in page.imgs]
    assert len(srcs) == 3  # the last two files are gone or not an image
    sizes = []
    for src in srcs:
        assert src.startswith("data:image/jpeg;base64,")
        data = base64.b64decode(src.split(",", 1)[1])
        assert len(data) < 8 * 1024
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and max(im.size) <= 96
            sizes.append(im.size)
    assert sizes[0] == (48, 96)  # EXIF orientation applied: the sideways 400x200 picture stands up
    text = " ".join(page.text)
    assert f"cannot read {tmp_path / 'gone.jpg'}" in text and f"cannot read {tmp_path / 'broken.jpg'}" in text


def test_confusion_matrix_scales_to_many_classes(train_run: dict, tmp_path: Path) -> None:
    names = [f"class_with_a_long_name_{i}" for i in range(37)]
    confusion = [[40 if i == j else i % 3 for j in range(37)] for i in range(37)]
    run = {**train_run, "classes": names, "evaluation": {"split": "val", "confusion": confusion}}
    page = parse(write_train_report(run, tmp_path / "report.html"))
    chart = page.chart("confusion")
    assert len(marks(chart, "rect", "cell")) == 37 * 37
    assert texts(chart, "text", "count") == [str(v) for row in confusion for v in row]
    assert "true class_with_a_long_name_35, predicted class_with_a_long_name_0: 2 of 112" in texts(chart, "title")


def test_evaluate_report_without_history_or_top_losses(train_run: dict, tmp_path: Path) -> None:
    run = {k: v for k, v in train_run.items() if k not in ("history", "best_epoch", "best_val_acc")}
    run.update(kind="evaluate", top_losses=[], evaluation={**run["evaluation"], "split": "test"})
    page = parse(write_train_report(run, tmp_path / "eval.html"))
    assert [c["figure"] for c in page.charts] == ["confusion"]
    assert page.imgs == []
    text = " ".join(page.text)
    assert "catdog evaluate" in text and "Confusion matrix (test split)" in text and "Per class (test split)" in text


def test_train_report_without_evaluation(train_run: dict, tmp_path: Path) -> None:
    run = {k: v for k, v in train_run.items() if k not in ("evaluation", "top_losses")}
    page = parse(write_train_report(run, tmp_path / "report.html"))
    assert sorted(c["figure"] for c in page.charts) == ["accuracy", "loss"]
    assert "This run holds no evaluation." in " ".join(page.text)


def test_report_is_written_atomically_and_replaces_an_old_one(train_run: dict, tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.html"
    target.parent.mkdir()
    target.write_text("old")
    assert write_train_report(train_run, target) == target
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]


# ---------------------------------------------------------------- compare


def test_compare_report_charts_and_table(compare_result: dict, tmp_path: Path) -> None:
    page = parse(write_compare_report(compare_result, tmp_path / "report.html"))
    rows = compare_result["rows"]
    ok = [r for r in rows if r["status"] == "ok"]
    for figure in ("params", "time"):
        chart = page.chart(figure)
        assert len(marks(chart, "circle", "pt")) == len(ok)
        assert len(marks(chart, "circle", "best")) == 1
        assert sorted(texts(chart, "text", "pt-label")) == sorted(r["backbone"] for r in ok)
        assert marks(chart, "path", "line") == []
    strategies = {r["strategy"] for r in ok}
    points = marks(page.chart("params"), "circle", "pt")
    colors = {frozenset(c for c in m[1] if re.fullmatch(r"c\d", c)) for m in points}
    assert len(colors) == len(strategies) == 2  # colored by strategy
    curves = page.figures("curve")
    assert len(curves) == len([r for r in rows if r["history"]])
    assert [len(marks(c, "circle", "pt")) for c in curves] == [len(r["history"]) for r in rows if r["history"]]

    ranked = sorted(ok, key=lambda r: -r["best_val_acc"])
    table = page.table_with("cell")
    names = [r["backbone"] + r["strategy"] for r in ranked + rows[-2:]]
    assert [row[0] for row in table] == ["★ " + names[0], *names[1:]]  # best first and marked, failed last
    for row, r in zip(table, ranked, strict=False):
        assert row[1:] == [
            fmt(r["best_val_acc"], "pct"),
            fmt(r["test_acc"], "pct"),
            fmt(r["best_epoch"], "int"),
            fmt(r["train_seconds"], "sec"),
            fmt(r["params_trainable"], "params"),
            fmt(r["val_loss"], "loss"),
            fmt(r["params_total"], "params"),
            fmt(r["images_per_sec"], "rate"),
        ]
    assert table[-2][1:] == ["failed: CUDA out of memory <tried 2.00 GiB>"]  # spans the metric columns
    assert table[-1][1:] == ["failed: no reason recorded"]
    assert dict(map(tuple, page.tables[-2])) == {
        k: v if isinstance(v, str) else fmt(v, "int") for k, v in compare_result["config"].items()
    }


def test_compare_report_of_one_backbone_without_a_test_split(compare_result: dict, tmp_path: Path) -> None:
    """One backbone: its name is the title's, not a label on every point; no test split: no column of dashes."""
    rows = [{**r, "test_acc": None} for r in compare_result["rows"] if r["backbone"] == "resnet18"]
    page = parse(write_compare_report({**compare_result, "rows": rows}, tmp_path / "report.html"))
    for figure in ("params", "time"):
        assert len(marks(page.chart(figure), "circle", "pt")) == 2
        assert texts(page.chart(figure), "text", "pt-label") == []
    (header,) = [t[0] for t in page.tables if t and t[0] and t[0][0] == "cell"]
    assert header == ["cell", *(c.title for c in METRIC_COLUMNS if c.key != "test_acc")]
    assert all(len(row) == len(header) for row in page.table_with("cell"))


def test_compare_report_with_every_cell_failed(compare_result: dict, tmp_path: Path) -> None:
    result = {**compare_result, "rows": compare_result["rows"][-2:]}
    page = parse(write_compare_report(result, tmp_path / "report.html"))
    assert [c["figure"] for c in page.charts] == ["curve"]
    assert not any(row[0].startswith("★") for row in page.table_with("cell"))


# ---------------------------------------------------------------- self-contained


@pytest.mark.parametrize("kind", ["train", "compare"])
def test_reports_are_self_contained(kind: str, train_run: dict, compare_result: dict, tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    if kind == "train":
        write_train_report(train_run, path)
    else:
        write_compare_report(compare_result, path)
    html = path.read_text(encoding="utf-8")
    page = parse(path)
    assert not re.search(r"https?:|//cdn|url\(", html, re.IGNORECASE)
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert all(v.startswith("data:image/jpeg;base64,") for v in (img["src"] for img in page.imgs))
    assert not any(v.startswith(("http", "//", "file:")) for v in page.attr_values)
    assert "<wasps & co>" not in html and "<tried" not in html  # user text is escaped


# ---------------------------------------------------------------- real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(html: Path, png: Path, width: int = 1200) -> Path:
    """Render with headless chromium; no network, no profile, no GPU."""
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={png.parent / 'profile'}",
            f"--screenshot={png}",
            f"--window-size={width},2000",
            html.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return png


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH")
@pytest.mark.parametrize("kind", ["train", "compare"])
def test_browser_renders_the_report(kind: str, train_run: dict, compare_result: dict, tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    if kind == "train":
        write_train_report(train_run, html)
    else:
        write_compare_report(compare_result, html)
    png = screenshot(html, tmp_path / "shot.png")
    with Image.open(png) as im:
        colors = im.convert("RGB").getcolors(1 << 24)
        total = im.width * im.height
    assert len(colors) > 50  # text, charts and images, not a blank or single-color page
    assert sum(n for n, rgb in colors if min(rgb) < 235) > total * 0.02
    assert sum(n for n, rgb in colors if max(rgb) - min(rgb) > 120) > 300  # the charts' colored marks drew


# ---------------------------------------------------------------- recipe: why training ended, imbalance, lr-find


def test_train_report_says_why_training_ended_and_notes_an_imbalance(train_run: dict, tmp_path: Path) -> None:
    run = {
        **train_run,
        "ended": "early stopping: no better val accuracy in the 2 epoch(s) after epoch 6",
        "train_counts": {"ants": 124, "bees": 24, "<wasps & co>": 30},
    }
    html = write_train_report(run, tmp_path / "report.html").read_text()
    assert "Training ended: early stopping" in html
    assert "Imbalanced training classes: ants has 124 images, bees 24 (5.2x)" in html
    even = write_train_report({**run, "train_counts": {"ants": 30, "bees": 24}}, tmp_path / "even.html").read_text()
    assert "mbalanced" not in even


def test_lr_find_report_has_a_chart_per_strategy_with_the_suggestion_marked(tmp_path: Path) -> None:
    from catdog_cli.reporting.lr_find_report import write_lr_find_report

    lrs = [1e-6 * 10 ** (i / 10) for i in range(60)]
    losses = [0.7 if i < 20 else max(0.1, 0.7 - 0.03 * (i - 20)) if i < 50 else 0.1 * 3 ** (i - 50) for i in range(60)]
    curve = {
        "strategy": "freeze",
        "lrs": lrs,
        "losses": losses,
        "smoothed": losses,
        "suggested_lr": lrs[30],
        "min_loss_lr": lrs[45],
        "lr_ratio": 10.0,
        "ended": "the loss blew up",
    }
    result = {
        "kind": "lr_find",
        "config": {"data": "/data/x", "backbone": "resnet18"},
        "classes": ["a", "b"],
        "device": "cpu",
        "curves": [curve, {**curve, "strategy": "finetune"}],
        "out": "o",
        "report": "r",
    }
    page = parse(write_lr_find_report(result, tmp_path / "lr.html"))
    html = (tmp_path / "lr.html").read_text()
    assert 'data-figure="lr-freeze"' in html and 'data-figure="lr-finetune"' in html
    assert f"suggested {fmt(lrs[30])}" in html and html.count('class="rule"') == 2
    shown = sum(1 for v in losses if v <= 1.05)  # the blown-up tail is left off the chart
    assert html.count("<circle") == 2 * 2 * shown  # loss and smoothed, two charts
    assert ["freeze", fmt(lrs[30]), fmt(lrs[45]), "the loss blew up"] in page.table_with("strategy")


def test_scatter_labels_never_print_over_each_other() -> None:
    """finetune and discriminative train the same parameters: two cells of one backbone at one spot printed
    "mobilenet_v3_smallmobilenet_v3_small"."""
    from catdog_cli.reporting.svg import Axis, Point, Series, plot

    points = [
        Point(1e6, 0.8, "a", label="mobilenet_v3_small"),
        Point(1e6, 0.8, "b", label="mobilenet_v3_small"),  # the same spot, the same name: once
        Point(1.02e6, 0.801, "c", label="resnet18"),  # another name close by: moved up a line
    ]
    svg = plot("f", [Series("s", points, 0, line=False)], Axis("trainable", log=True), Axis("acc", percent=True))
    labels = re.findall(r'<text class="pt-label" x="[0-9.]+" y="([0-9.]+)"[^>]*>([^<]*)</text>', svg)
    texts = [t for _, t in labels]
    assert sorted(texts) == ["mobilenet_v3_small", "resnet18"]
    ys = [float(y) for y, _ in labels]
    assert abs(ys[0] - ys[1]) >= 12  # a line apart
