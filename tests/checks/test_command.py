"""`catdog check` on the command line: --json, --report, exit codes, bad input."""

from __future__ import annotations

import csv
import json
import shutil

from helpers import catdog, error_line, make_photo, snapshot
from test_runner import clean

HASHES = ("--no-features",)
FEATURES = ("--backbone", "resnet18", "--weights", "none", "--image-size", "32", "--device", "cpu")


def test_json_is_strict_and_alone_on_stdout(tmp_path):
    root = clean(tmp_path / "data", train=4, val=2)
    result = catdog("check", root, *HASHES, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert record["kind"] == "check" and record["images"] == 12
    assert record["findings"] == {"error": 0, "warning": 0, "info": 0}


def test_a_leak_fails_the_check_by_default_and_fail_on_sets_the_level(tmp_path):
    root = clean(tmp_path / "data", train=4, val=2)
    shutil.copy(root / "val/red/val0.png", root / "train/red/copy.png")
    before = snapshot(root)
    failed = catdog("check", root, *HASHES)
    assert failed.exit_code == 1
    assert "LEAK exact" in failed.stdout and "train/red/copy.png" in failed.stdout
    assert catdog("check", root, *HASHES, "--fail-on", "never").exit_code == 0
    assert snapshot(root) == before


def test_warnings_fail_only_with_fail_on_warning(tmp_path):
    root = clean(tmp_path / "data", train=4, val=2)
    make_photo(tmp_path / "x.png", 5).rename(root / "train/blue/liar.jpg")
    assert catdog("check", root, *HASHES).exit_code == 0
    assert catdog("check", root, *HASHES, "--fail-on", "warning").exit_code == 1


def test_a_bad_fail_on_is_a_usage_error(tmp_path):
    root = clean(tmp_path / "data", train=2, val=1)
    result = catdog("check", root, "--fail-on", "sometimes")
    assert result.exit_code == 2
    assert "sometimes" in result.stderr and "Traceback" not in result.stderr


def test_report_is_written_new_and_never_over_a_file(tmp_path):
    root = clean(tmp_path / "data", train=6, val=2)
    shutil.copy(root / "val/red/val0.png", root / "train/red/copy.png")
    report = tmp_path / "check.html"
    result = catdog("check", root, *FEATURES, "--report", report, "--fail-on", "never")
    assert result.exit_code == 0, result.output
    html = report.read_text()
    assert "Duplicates and leaks" in html and "data:image/jpeg;base64," in html and "<script" not in html
    assert html.count("train/red/copy.png") >= 1
    again = catdog("check", root, *HASHES, "--report", report)
    assert "already exists" in error_line(again)
    assert report.read_text() == html


def test_bad_input_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    make_photo(tmp_path / "one/only/a.png", 1)
    for c in "ab":
        (tmp_path / "texts" / c).mkdir(parents=True)
        (tmp_path / "texts" / c / "notes.txt").write_text("no image here")
    for name in ("empty", "one", "texts", "missing"):
        line = error_line(catdog("check", tmp_path / name, *HASHES))
        # one line, about this folder (a message may name the path twice: the folder read and the data root)
        assert line.count("\n") == 0 and str(tmp_path / name) in line and "Traceback" not in line, line


def test_train_warns_in_one_line_of_a_byte_identical_copy_across_splits(tmp_path):
    root = clean(tmp_path / "data", train=3, val=2)
    shutil.copy(root / "train/red/train0.png", root / "val/red/copy.png")
    result = catdog("train", "--data", root, *FEATURES[:6], "--epochs", "1", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "byte-identical" in line]
    assert len(lines) == 1 and "catdog check" in lines[0]


def test_csv_lists_every_finding_and_is_new_only(tmp_path):
    root = clean(tmp_path / "data", train=4, val=2)
    shutil.copy(root / "val/red/val0.png", root / "train/red/copy.png")
    (root / "train/blue/empty.png").write_bytes(b"")
    out = tmp_path / "findings.csv"
    result = catdog("check", root, *HASHES, "--csv", out, "--fail-on", "never")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["level", "finding", "path", "split", "label", "other_path", "other_split", "detail"]
    assert rows[1][:2] == ["error", "leak (exact)"] and {rows[1][2], rows[1][5]} == {
        "val/red/val0.png",
        "train/red/copy.png",
    }
    assert rows[2][:3] == ["error", "unreadable", "train/blue/empty.png"]
    assert "already exists" in error_line(catdog("check", root, *HASHES, "--csv", out))
