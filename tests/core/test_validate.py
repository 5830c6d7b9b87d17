"""validate: every option refused in one line before any work, and what passed handed on resolved, once."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from catdog_cli.core.validate import Checked, check_export, check_number, check_once, check_options, check_use
from catdog_cli.errors import CatdogError


@pytest.mark.parametrize("value", [math.nan, math.inf, -1, 100_001, True, "3"])
def test_a_number_outside_its_limits_or_not_a_number_is_refused(value):
    with pytest.raises(CatdogError, match=r"^--epochs "):
        check_number("epochs", value)


def test_the_bounds_are_inclusive_but_lr_must_be_above_zero():
    check_number("epochs", 1), check_number("epochs", 100_000), check_number("lr", 10)
    with pytest.raises(CatdogError, match=r"^--lr 0 is out of range: it must be above 0 and at most 10$"):
        check_number("lr", 0)


def test_names_are_refused_with_a_suggestion():
    with pytest.raises(CatdogError, match=r"^unknown strategy 'frieze'; did you mean freeze\?"):
        check_options({"strategy": "frieze"})
    with pytest.raises(CatdogError, match=r"^unknown device 'mps'; use auto, cpu or cuda\[:N\]$"):
        check_options({"device": "mps"})


def test_a_name_given_twice_is_refused():
    check_once("--backbones", ["resnet18", "vgg11"])
    with pytest.raises(CatdogError, match=r"^--backbones names vgg11 twice; name each once$"):
        check_once("--backbones", ["vgg11", "resnet18", "vgg11"])


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "best.pt"
    path.write_bytes(b"not read by the checks")
    return path


def test_use_refuses_what_is_no_model_file(tmp_path, model):
    with pytest.raises(CatdogError, match=r"is a folder, not a checkpoint file"):
        check_use(tmp_path)
    with pytest.raises(CatdogError, match=r"^checkpoint not found: "):
        check_use(tmp_path / "gone.pt")
    os.mkfifo(tmp_path / "pipe.pt")
    with pytest.raises(CatdogError, match=r"is not a regular file"):  # reading it would hang
        check_use(tmp_path / "pipe.pt")
    with pytest.raises(CatdogError, match=r"^unknown split 'vall'; did you mean val or all\?"):
        check_use(model, split="vall")


def test_use_hands_on_the_model_as_given_and_the_data_folder_resolved(tmp_path, model, monkeypatch):
    (tmp_path / "photos").mkdir()
    monkeypatch.chdir(tmp_path)
    checked = check_use("best.pt", data="photos")
    assert checked == Checked("best.pt", Path("photos"))  # the folder it read, as a path
    assert check_use(model).data is None
    (tmp_path / "r.html").write_text("mine")
    with pytest.raises(CatdogError, match=r"r\.html"):  # a report never replaces a file
        check_use(model, report=tmp_path / "r.html")


def test_export_names_its_file_by_format_and_refuses_int8_outside_onnx(model):
    assert check_export(model, "torchscript") == model.with_suffix(".torchscript")
    with pytest.raises(CatdogError, match=r"^--int8 quantizes an ONNX file: use it with --format onnx$"):
        check_export(model, "torchscript", int8=True)
    with pytest.raises(CatdogError, match=r"^unknown export format 'onx'; did you mean onnx\?"):
        check_export(model, "onx")
    model.with_suffix(".torchscript").write_bytes(b"a user's file")
    with pytest.raises(CatdogError, match=r"already exists"):
        check_export(model, "torchscript")
