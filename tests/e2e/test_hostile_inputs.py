"""Issue 5: hostile folders, interruptions and untrusted files.

Every case either ends in one `error:` line with exit code 1 and no traceback, or runs on the valid images
and says what it skipped and why. Nothing the user has is overwritten, and no file is ever executed.
Runs use random init at 32 px on the CPU. The signal tests run `catdog train` in a subprocess and poll its
output folder with a deadline (no fixed sleeps); everything else calls the CLI in-process.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import (
    CLASS_COLORS,
    TINY_CLI,
    bomb_png,
    catdog,
    error_line,
    labeled_folder,
    make_image,
    ok_json,
    out_of_memory,
    snapshot,
    special_file,
)
from PIL import Image, ImageFile

from catdog_cli.core.formatting import printable
from catdog_cli.core.paths import LOCK, new_run_dir, run_folder
from catdog_cli.data.decode import ImageError, open_rgb
from catdog_cli.errors import OUT_OF_MEMORY, CatdogError
from catdog_cli.inference.predict import sort_into_folders
from catdog_cli.models import checkpoints
from catdog_cli.models.transfer import TransferModel

# --- the hostile folder -----------------------------------------------------------------------------------


def _truncated_jpeg(path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), CLASS_COLORS[0]).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def _exif_rotated(path: Path) -> None:
    """Stored 40x20 landscape, EXIF orientation 6: shown (and to be decoded) as a 20x40 portrait."""
    im = Image.new("RGB", (40, 20), CLASS_COLORS[1])
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(path, exif=exif)


def _colored(mode: str, fmt: str | None = None) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        Image.new("RGB", (40, 36), CLASS_COLORS[1]).convert(mode).save(path, fmt)

    return write


# train/cat/NAME -> (how to make it, why it is skipped)
BAD: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated.jpg": (_truncated_jpeg, "truncated file"),
    "zero.jpg": (lambda p: p.write_bytes(b""), "empty file"),
    "text.jpg": (lambda p: p.write_text("not a picture"), "not an image, or a format Pillow cannot read"),
    "bomb.png": (lambda p: p.write_bytes(bomb_png(30000, 30000)), "over the 100,000,000 pixel limit"),
    "loop.jpg": (lambda p: p.symlink_to(p.name), "Too many levels of symbolic links"),
}
# train/dog/NAME -> how to make it; each is decoded and trained on
ODD_BUT_VALID: dict[str, Callable[[Path], None]] = {
    "alpha.png": lambda p: Image.new("RGBA", (40, 30), (*CLASS_COLORS[1], 0)).save(p),
    "sixteen-bit.png": lambda p: Image.frombytes("I;16", (40, 30), bytes(range(256)) * 9 + bytes(96)).save(p),
    "gray.png": _colored("L"),
    "palette.gif": _colored("P"),
    "cmyk.jpg": _colored("CMYK", "JPEG"),
    "exif rotated.jpg": _exif_rotated,
    "chat noir é 猫.png": _colored("RGB"),
    "photo [red] (1).png": _colored("RGB"),  # looks like rich markup
}


def make_hostile(root: Path) -> Path:
    """train/{cat,dog,fox,empty}, val/{cat,dog,bird}: every kind of trouble a real folder has, plus 20+6 good
    images (cat 4, dog 4 plain + 8 odd, fox 4; val cat 3, dog 3)."""
    for split, counts in (("train", {"cat": 4, "dog": 4, "fox": 4}), ("val", {"cat": 3, "dog": 3, "bird": 2})):
        for k, (name, n) in enumerate(counts.items()):
            for i in range(n):
                make_image(root / split / name / f"{i}.png", CLASS_COLORS[k], (40 + i, 36))
    for name, (write, _) in BAD.items():
        write(root / "train" / "cat" / name)
    for name, write in ODD_BUT_VALID.items():
        write(root / "train" / "dog" / name)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "train" / "cat" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "train" / "cat" / "again").symlink_to(".", target_is_directory=True)  # a folder loop
    (root / "train" / "empty").mkdir()
    (root / "train" / "empty" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root


@dataclass
class HostileRuns:
    root: Path
    train: dict[str, Any]
    train_log: list[str]
    evaluate: dict[str, Any]
    predict: list[dict[str, Any]]
    model: Path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> HostileRuns:
    """train, evaluate (on train, where the bad files are) and predict, once each, on the hostile folder."""
    tmp = tmp_path_factory.mktemp("hostile")
    root = make_hostile(tmp / "data")
    trained = catdog(
        "train", "--data", root, *TINY_CLI, "--epochs", "1", "--batch-size", "4", "--out", tmp / "run", "--json"
    )
    model = tmp / "run" / "best.pt"
    evaluated = catdog("evaluate", model, "--data", root, "--split", "train", "--device", "cpu", "--json")
    predicted = catdog("predict", model, root / "train", "--device", "cpu", "--json")
    return HostileRuns(
        root,
        ok_json(trained),
        trained.stderr.splitlines(),
        ok_json(evaluated),
        ok_json(predicted)["predictions"],
        model,
    )


@pytest.mark.parametrize("name", BAD)
def test_a_bad_file_is_skipped_with_its_reason_by_every_command(hostile: HostileRuns, name: str) -> None:
    path, reason = str(hostile.root / "train" / "cat" / name), BAD[name][1]
    assert {"path": path, "reason": reason} in hostile.train["skipped"]
    assert f"skipped {path}: {reason}" in hostile.train_log
    assert {"path": path, "reason": reason} in hostile.evaluate["skipped"]
    assert {"path": path, "error": reason} in hostile.predict


@pytest.mark.parametrize("name", ODD_BUT_VALID)
def test_an_odd_but_valid_image_is_used_by_every_command(hostile: HostileRuns, name: str) -> None:
    path = str(hostile.root / "train" / "dog" / name)
    assert path not in {s["path"] for s in hostile.train["skipped"] + hostile.evaluate["skipped"]}
    (row,) = [r for r in hostile.predict if r["path"] == path]
    assert row["label"] in hostile.train["classes"]


def test_hostile_folder_trains_on_every_valid_image_and_says_what_it_left_out(hostile: HostileRuns) -> None:
    train, root = hostile.train, hostile.root
    assert train["classes"] == ["cat", "dog", "fox"]  # the empty folder is no class, bird is only in val
    assert train["images"] == {"train": 20, "val": 6}  # the folder loop did not count anything twice
    assert train["evaluation"]["num_images"] == 6
    assert len(train["skipped"]) == len(BAD)
    for note in (
        f"{root / 'train' / 'cat'}: ignored 1 non-image file(s)",  # notes.txt; .DS_Store, Thumbs.db silent
        f"{root / 'train' / 'empty'}: no images, class left out",
        "val: class folder(s) bird not among the classes, left out",
        "val: no images of fox",
    ):
        assert note in hostile.train_log
    assert hostile.evaluate["num_images"] == 20
    assert len(hostile.predict) == 20 + len(BAD)
    assert not {Path(r["path"]).name for r in hostile.predict} & {"notes.txt", ".DS_Store", "Thumbs.db"}


def test_file_names_that_look_like_markup_are_printed_as_they_are(hostile: HostileRuns) -> None:
    result = catdog("predict", hostile.model, hostile.root / "train" / "dog" / "photo [red] (1).png", "--device", "cpu")
    assert result.exit_code == 0
    assert "photo [red] (1).png" in result.stdout


def test_exif_orientation_and_sixteen_bit_pixels_are_decoded_right(hostile: HostileRuns) -> None:
    dog = hostile.root / "train" / "dog"
    assert open_rgb(dog / "exif rotated.jpg").size == (20, 40)
    lo, hi = open_rgb(dog / "sixteen-bit.png").convert("L").getextrema()
    assert (lo, hi) == (0, 255)  # scaled to 8 bits, not clipped to white


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(30000, 30000))  # 2.7 GB as RGB

    def load(self):  # where Pillow allocates the pixels: never reached
        raise AssertionError("the bomb was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    with pytest.raises(ImageError, match="over the 100,000,000 pixel limit"):
        open_rgb(bomb)


def test_a_dataset_with_one_class_is_refused(tmp_path: Path) -> None:
    root = labeled_folder(tmp_path / "data", classes=("cat",))
    (root / "dog").mkdir()  # an empty second class does not count
    line = error_line(catdog("train", "--data", root, *TINY_CLI, "--out", tmp_path / "run"))
    assert line == (
        f"error: {root} has 1 class folder(s) with images; a classifier needs at least 2 "
        "(expected DIR/<class>/*.jpg or DIR/train/<class>/*.jpg)"
    )
    assert not (tmp_path / "run").exists()


def test_a_dataset_without_one_decodable_training_image_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            (root / split / name / "broken.jpg").write_text("not a picture")
    line = error_line(catdog("train", "--data", root, *TINY_CLI, "--out", tmp_path / "run"))
    assert line == f"error: no usable training images in {root}"


def test_evaluate_refuses_data_with_classes_the_model_does_not_know(hostile: HostileRuns, tmp_path: Path) -> None:
    root = labeled_folder(tmp_path / "data", classes=("cat", "dog", "zebra"), per_class=2)
    line = error_line(catdog("evaluate", hostile.model, "--data", root, "--device", "cpu"))
    assert "classes the model does not know: zebra (its classes: cat, dog, fox)" in line


# --- untrusted checkpoints ----------------------------------------------------------------------------------


class Payload:
    """Unpickling this runs code: it writes `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def _resume_dir(tmp_path: Path, checkpoint: Path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(checkpoint, folder / "last.pt")
    return folder


def command_on(command: str, checkpoint: Path, hostile: HostileRuns, tmp_path: Path) -> tuple[object, ...]:
    """evaluate or predict with `checkpoint`, or resume a run folder whose last.pt it is."""
    if command == "resume":
        return ("train", "--resume", _resume_dir(tmp_path, checkpoint))
    if command == "evaluate":
        return ("evaluate", checkpoint, "--data", hostile.root, "--device", "cpu")
    return ("predict", checkpoint, hostile.root / "train" / "dog" / "0.png", "--device", "cpu")


@pytest.mark.parametrize("command", ["evaluate", "predict", "resume"])
def test_a_checkpoint_carrying_code_is_refused_and_the_code_never_runs(
    hostile: HostileRuns, tmp_path: Path, command: str
) -> None:
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"format": checkpoints.FORMAT, "backbone": "squeezenet1_1", "payload": Payload(marker)}, evil)
    line = error_line(catdog(*command_on(command, evil, hostile, tmp_path)))
    where = tmp_path / "run" / "last.pt" if command == "resume" else evil
    assert (
        line == f"error: {where} is not a catdog checkpoint (it holds code or objects other than tensors); "
        "refusing to load it"
    )
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the payload is real: an unguarded load runs it
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("command", ["evaluate", "predict", "resume"])
def test_a_truncated_checkpoint_is_refused(hostile: HostileRuns, tmp_path: Path, command: str) -> None:
    half = tmp_path / "half.pt"
    half.write_bytes(hostile.model.read_bytes()[: hostile.model.stat().st_size // 2])
    line = error_line(catdog(*command_on(command, half, hostile, tmp_path)))
    assert line.endswith("is not a catdog checkpoint (unreadable); refusing to load it")


@pytest.mark.parametrize("command", ["evaluate", "predict", "resume"])
def test_a_checkpoint_with_our_tag_but_not_our_contents_is_refused(
    hostile: HostileRuns, tmp_path: Path, command: str
) -> None:
    forged = tmp_path / "forged.pt"
    torch.save({"format": checkpoints.FORMAT, "backbone": "resnet18"}, forged)
    line = error_line(catdog(*command_on(command, forged, hostile, tmp_path)))
    assert line.endswith(
        "is an incomplete catdog checkpoint (no classes, image_size, resize, mean, std, state_dict); "
        "refusing to load it"
    )


def test_a_best_checkpoint_cannot_be_resumed(hostile: HostileRuns, tmp_path: Path) -> None:
    folder = _resume_dir(tmp_path, hostile.model)
    line = error_line(catdog("train", "--resume", folder))
    assert line == f"error: {folder / 'last.pt'} holds no training state to resume from; it is not a run's last.pt"


def test_a_checkpoint_whose_weights_are_not_its_backbone_is_refused(hostile: HostileRuns, tmp_path: Path) -> None:
    ckpt = checkpoints.load(hostile.model)
    forged = tmp_path / "forged.pt"
    torch.save({**ckpt, "backbone": "resnet18"}, forged)
    line = error_line(catdog("predict", forged, hostile.root / "train" / "dog" / "0.png", "--device", "cpu"))
    assert line.startswith("error: checkpoint does not match backbone resnet18: ")


def test_train_without_data_or_resume_says_what_it_needs() -> None:
    line = error_line(catdog("train"))
    assert line == "error: train needs --data DIR (or --resume OUT to continue an interrupted run)"


# --- disk and output safety ---------------------------------------------------------------------------------


def test_train_never_writes_into_an_existing_run(hostile: HostileRuns) -> None:
    run = hostile.model.parent
    before = snapshot(run)
    line = error_line(catdog("train", "--data", hostile.root, *TINY_CLI, "--out", run))
    assert line == f"error: {run} already exists and is not empty; catdog never overwrites a run (pick a new --out)"
    assert snapshot(run) == before


def test_default_run_folders_are_always_new(tmp_path: Path) -> None:
    first = new_run_dir(tmp_path, "train")
    (first / "best.pt").write_bytes(b"a finished run")
    assert new_run_dir(tmp_path, "train") == tmp_path / "train2"
    assert (first / "best.pt").read_bytes() == b"a finished run"


def test_predict_never_overwrites_a_csv(hostile: HostileRuns, tmp_path: Path) -> None:
    existing = tmp_path / "predictions.csv"
    existing.write_text("the user's own file")
    image = hostile.root / "train" / "dog" / "0.png"
    line = error_line(catdog("predict", hostile.model, image, "--device", "cpu", "--csv", existing))
    assert line == f"error: {existing} already exists; choose a new --csv file (or add --overwrite to replace it)"
    assert existing.read_text() == "the user's own file"


@pytest.mark.parametrize("target", ["model", "image", "image in folder", "link to model"])
def test_an_output_never_replaces_an_input_of_the_same_command(
    hostile: HostileRuns, tmp_path: Path, target: str
) -> None:
    """`predict m.pt DIR --csv m.pt --overwrite` replaced the checkpoint it was reading, exit 0: refused up front,
    however the input is named (itself, an image given, an image of a folder given, a link)."""
    model = tmp_path / "m.pt"
    shutil.copy(hostile.model, model)
    folder = tmp_path / "photos"
    image = make_image(folder / "a.png", CLASS_COLORS[0])
    inputs, csv = {
        "model": ([folder], model),
        "image": ([image], image),
        "image in folder": ([folder], image),
        "link to model": ([folder], tmp_path / "link.csv"),
    }[target]
    if target == "link to model":
        csv.symlink_to(model)
    before = snapshot(tmp_path)
    line = error_line(catdog("predict", model, *inputs, "--device", "cpu", "--csv", csv, "--overwrite"))
    assert line.startswith(f"error: --csv {csv} is an input of this command (") and line.endswith("choose another file")
    assert snapshot(tmp_path) == before
    other = folder / "predictions.csv"  # in the folder, but not an image it reads: replaced as asked
    other.write_text("old")
    assert ok_json(catdog("predict", model, folder, "--device", "cpu", "--csv", other, "--overwrite", "--json"))
    assert other.read_text().startswith("path")


def test_sort_into_copies_by_label_renames_clashes_and_leaves_originals(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    a, b = make_image(src / "a" / "x.jpg", CLASS_COLORS[0]), make_image(src / "b" / "x.jpg", CLASS_COLORS[1])
    originals = snapshot(src)
    dest = tmp_path / "sorted"
    make_image(dest / "cat" / "x.jpg", CLASS_COLORS[2])  # already there: the user's
    theirs = snapshot(dest)
    rows = [
        {"path": str(a), "label": "cat"},
        {"path": str(b), "label": "cat"},
        {"path": "zero.jpg", "error": "empty file"},
    ]
    assert sort_into_folders(rows, dest) == 2
    assert [r.get("copied_to") for r in rows] == [str(dest / "cat" / "x-1.jpg"), str(dest / "cat" / "x-2.jpg"), None]
    assert (dest / "cat" / "x-1.jpg").read_bytes() == a.read_bytes()
    assert (dest / "cat" / "x-2.jpg").read_bytes() == b.read_bytes()
    assert snapshot(src) == originals
    assert {k: v for k, v in snapshot(dest).items() if k in theirs} == theirs


@pytest.mark.parametrize("label", ["../outside", "..", "a/b", ""])
def test_sort_into_refuses_a_class_name_that_is_not_a_folder_name(tmp_path: Path, label: str) -> None:
    image = make_image(tmp_path / "x.jpg", CLASS_COLORS[0])
    with pytest.raises(CatdogError, match="is not a safe folder name"):
        sort_into_folders([{"path": str(image), "label": label}], tmp_path / "sorted")
    assert not (tmp_path / "sorted").exists()
    assert not (tmp_path / "outside").exists()


def test_predict_sort_into_on_the_hostile_folder(hostile: HostileRuns, tmp_path: Path) -> None:
    dest = tmp_path / "sorted"
    originals = snapshot(hostile.root)
    rows = ok_json(
        catdog("predict", hostile.model, hostile.root / "train", "--device", "cpu", "--sort-into", dest, "--json")
    )["predictions"]
    labeled = [r for r in rows if "label" in r]
    assert len(labeled) == 20  # train/{cat,dog,fox}/0.png clash when they share a label: none is lost
    for row in labeled:
        copy = Path(row["copied_to"])
        where = dest / "_unknown" if row.get("unknown") else dest / row["label"]  # the detector's unknown apart
        assert copy.parent == where and copy.read_bytes() == Path(row["path"]).read_bytes()
    assert len({r["copied_to"] for r in labeled}) == 20
    assert all("copied_to" not in r for r in rows if "error" in r)
    assert snapshot(hostile.root) == originals


# --- resource errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_out_of_memory_during_training_says_to_lower_the_batch_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    forward = TransferModel.forward

    def oom(self, x):
        if x.device.type == "meta":  # the shape probe before training allocates nothing
            return forward(self, x)
        if device == "cpu":  # the CPU allocator really failing: a RuntimeError with no type of its own
            torch.empty(2**62, dtype=torch.uint8)
        raise out_of_memory()

    monkeypatch.setattr(TransferModel, "forward", oom)
    data = labeled_folder(tmp_path / "data", per_class=4)
    line = error_line(catdog("train", "--data", data, *TINY_CLI, "--epochs", "1", "--out", tmp_path / "run"))
    assert line == f"error: {OUT_OF_MEMORY}"
    assert "--batch-size" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
@pytest.mark.parametrize("command", ["train", "evaluate", "predict"])
def test_device_cuda_without_a_gpu_is_a_clear_error(hostile: HostileRuns, tmp_path: Path, command: str) -> None:
    args = {
        "train": ("train", "--data", hostile.root, "--out", tmp_path / "run", "--weights", "none"),
        "evaluate": ("evaluate", hostile.model),
        "predict": ("predict", hostile.model, hostile.root / "train" / "dog" / "0.png"),
    }[command]
    line = error_line(catdog(*args, "--device", "cuda"))
    assert line == "error: --device cuda: no CUDA GPU is visible to PyTorch (use --device cpu or auto)"
    assert not (tmp_path / "run").exists()


# --- issue 12: nothing lost or overwritten, names that are not text, special files, needles ----------------------


@pytest.mark.parametrize(
    "target", ["the checkpoint itself", "an existing file", "a folder", "in a missing folder", "under /proc"]
)
def test_evaluate_report_never_overwrites_and_is_checked_before_any_work(
    hostile: HostileRuns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    mine = tmp_path / "mine.html"
    mine.write_text("the user's own file")
    path = {
        "the checkpoint itself": hostile.model,
        "an existing file": mine,
        "a folder": tmp_path,
        "in a missing folder": tmp_path / "missing" / "r.html",
        "under /proc": Path("/proc/catdog/r.html"),
    }[target]
    monkeypatch.setattr(checkpoints, "load", pytest.fail)  # refused before the model is read
    before = snapshot(tmp_path), hostile.model.read_bytes()
    line = error_line(catdog("evaluate", hostile.model, "--device", "cpu", "--report", path))
    assert "--report" in line or "already exists" in line
    assert (snapshot(tmp_path), hostile.model.read_bytes()) == before


def test_a_report_that_appeared_while_evaluate_ran_is_kept(
    hostile: HostileRuns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from catdog_cli.reporting import run_report as report

    path = tmp_path / "report.html"
    real = report.write_train_report

    def meanwhile(result, where):
        path.write_text("the user's, written while evaluate ran")
        return real(result, where)

    monkeypatch.setattr(report, "write_train_report", meanwhile)
    line = error_line(catdog("evaluate", hostile.model, "--device", "cpu", "--report", path))
    assert line == f"error: {path} already exists; choose a new --report file"
    assert path.read_text() == "the user's, written while evaluate ran"
    assert os.listdir(tmp_path) == ["report.html"]


def test_two_trains_into_one_out_cannot_both_run(tmp_path: Path) -> None:
    data, out = labeled_folder(tmp_path / "data", per_class=4), tmp_path / "run"
    with run_folder(out, "train"):  # the first run holds it
        line = error_line(catdog("train", "--data", data, *TINY_CLI, "--epochs", "1", "--out", out))
        assert line == f"error: {out} is in use by another catdog run; if none is running, delete {out / LOCK}"
        assert os.listdir(out) == [LOCK]


HOSTILE_NAMES = [os.fsdecode(b"chat\xff"), os.fsdecode(b"\xe9t\xe9"), "[red]rouge", "[bold]x", "a[b]c", "tab\there"]


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run on classes and files whose names are not UTF-8, look like markup, or hold control characters."""
    tmp = tmp_path_factory.mktemp("names")
    for k, name in enumerate(HOSTILE_NAMES):
        for i in range(4):
            make_image(tmp / "data" / name / os.fsdecode(b"img%d\xfe[i].png" % i), CLASS_COLORS[k % 5], (40 + i, 36))
    train = catdog("train", "--data", tmp / "data", *TINY_CLI, "--epochs", "1", "--out", tmp / "run")
    evaluate = catdog("evaluate", tmp / "run" / "best.pt", "--device", "cpu", "--report", tmp / "report.html")
    predict = catdog(
        "predict",
        tmp / "run" / "best.pt",
        tmp / "data",
        "--device",
        "cpu",
        "--csv",
        tmp / "p.csv",
        "--sort-into",
        tmp / "sorted",
        "--json",
    )
    return {"tmp": tmp, "train": train, "evaluate": evaluate, "predict": predict}


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_names_that_are_not_plain_text_never_crash_a_finished_run(named: dict[str, Any], name: str) -> None:
    tmp, shown = named["tmp"], printable(name)
    for command in ("train", "evaluate", "predict"):
        assert named[command].exit_code == 0, named[command].output
    assert shown in named["train"].stdout and shown in named["evaluate"].stdout  # verbatim: no markup, bytes escaped
    run = json.loads((tmp / "run" / "run.json").read_text())
    assert printable(name, controls=False) in run["classes"]
    rows = json.loads(named["predict"].stdout)["predictions"]
    assert len(rows) == 4 * len(HOSTILE_NAMES) and all("label" in r for r in rows)
    table = (tmp / "p.csv").read_text(encoding="utf-8")  # strictly UTF-8: readable by any tool
    assert len(table.splitlines()) == 1 + len(rows)
    assert name in os.listdir(tmp / "sorted") or not any(r["label"] == printable(name, controls=False) for r in rows)
    assert "html" in (tmp / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("kind", ["fifo", "socket", "char device"])
def test_predict_lists_a_special_file_as_unreadable_and_never_hangs(
    hostile: HostileRuns, tmp_path: Path, kind: str
) -> None:
    path = special_file(kind, tmp_path)
    done: list = []
    worker = threading.Thread(
        target=lambda: done.append(catdog("predict", hostile.model, path, "--device", "cpu", "--json")), daemon=True
    )
    worker.start()
    worker.join(timeout=120)  # a deadline for a hang, not a timing
    assert done, "predict hung on a special file"
    assert done[0].exit_code == 1  # nothing could be classified; the document still says why
    assert json.loads(done[0].stdout)["predictions"] == [
        {"path": path, "error": "not a regular file (a FIFO, device or socket is never read)"}
    ]


def test_needle_images_are_skipped_by_train_and_predict(tmp_path: Path) -> None:
    data = labeled_folder(tmp_path / "data", per_class=4)
    for size in ((1, 1_000_000), (1_000_000, 1), (2, 60_000)):
        (data / "cat" / f"needle-{size[0]}x{size[1]}.png").write_bytes(bomb_png(*size))
    run = ok_json(catdog("train", "--data", data, *TINY_CLI, "--epochs", "1", "--out", tmp_path / "run", "--json"))
    assert sorted(s["reason"] for s in run["skipped"]) == sorted(
        f"{w}x{h} pixels is longer than 100:1; not a photo" for w, h in ((1, 1_000_000), (1_000_000, 1), (2, 60_000))
    )
    rows = ok_json(catdog("predict", tmp_path / "run" / "best.pt", data / "cat", "--device", "cpu", "--json"))[
        "predictions"
    ]
    assert sum("error" in r for r in rows) == 3


EMPTY_VAL = {  # what val/ holds -> how it is made
    "nothing": lambda val: val.mkdir(),
    "empty class folders": lambda val: [(val / c).mkdir(parents=True) for c in ("cat", "dog")],
    "only non-images": lambda val: [
        (val / c / "notes.txt").parent.mkdir(parents=True) or (val / c / "notes.txt").write_text("x")
        for c in ("cat", "dog")
    ],
    "only broken images": lambda val: [
        (val / c / "b.jpg").parent.mkdir(parents=True) or (val / c / "b.jpg").write_bytes(b"broken")
        for c in ("cat", "dog")
    ],
}


@pytest.mark.parametrize("case", EMPTY_VAL)
def test_an_empty_val_folder_says_what_will_work(tmp_path: Path, case: str) -> None:
    data = tmp_path / "data"
    labeled_folder(data / "train", per_class=4)
    EMPTY_VAL[case](data / "val")
    line = error_line(catdog("train", "--data", data, *TINY_CLI, "--epochs", "1", "--out", tmp_path / "run"))
    assert line == (
        f"error: no usable validation images in {data / 'val'}: put images in {data / 'val'}/<class>/, "
        "or remove that folder and catdog splits train into train and val (--val-split)"
    )
    assert not (tmp_path / "run").exists()


def test_a_train_json_holds_only_the_document_while_weights_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision

    from catdog_cli.models.backbones import TORCHVISION

    state = TORCHVISION["squeezenet1_1"].build_full().state_dict()

    def download(url, *args, **kwargs):
        print(f'Downloading: "{url}" to /cache/squeezenet1_1.pth')  # what torch hub prints, on stdout
        return state

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", download)
    data = labeled_folder(tmp_path / "data", per_class=4)
    result = catdog(
        "train",
        "--data",
        data,
        "--backbone",
        "squeezenet1_1",
        "--weights",
        "default",
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        tmp_path / "run",
        "--json",
    )
    assert json.loads(result.stdout)["epochs"] == 1
    assert "Downloading: " in result.stderr


@pytest.mark.parametrize("name", ["[red]rouge", "[bold]x", "a[b]c"])
def test_fetch_prints_class_names_that_look_like_markup_as_they_are(tmp_path: Path, name: str) -> None:
    source = labeled_folder(tmp_path / "photos", classes=(name, "dog"), per_class=3)
    result = catdog("fetch", "mine", "--from", source, "--root", tmp_path / "home")
    assert result.exit_code == 0, result.output
    assert f"{name}, dog" in result.stdout


@pytest.mark.parametrize(
    "error",
    [
        PermissionError(13, "Permission denied", "/data/x.csv"),
        OSError(28, "No space left on device", "/data/x.csv"),
        OSError(30, "Read-only file system", "/data/x.csv"),
        OSError(5, "Input/output error"),
    ],
    ids=["EACCES", "ENOSPC", "EROFS", "EIO"],
)
def test_an_environment_error_no_check_foresaw_is_one_line(
    hostile: HostileRuns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError
) -> None:
    from catdog_cli.inference import predict

    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(predict, "create_new", fails)
    image = hostile.root / "train" / "dog" / "0.png"
    line = error_line(catdog("predict", hostile.model, image, "--device", "cpu", "--csv", tmp_path / "p.csv"))
    assert line == f"error: {error.strerror}" + (f": {error.filename}" if error.filename else "")


# --- issue 25: a full disk is one line naming the file, and a run stays resumable --------------------------------


def _with_file_size_limit(limit: int, *args: object, cwd: Path) -> subprocess.CompletedProcess:
    """catdog in a subprocess whose every file may grow to `limit` bytes (ulimit -f): what a full disk does to a
    write, for real, to torch's zip and TorchScript writers too (SIGXFSZ ignored, as shells running jobs do)."""

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "COLUMNS": "1000"}
    command = [sys.executable, "-m", "catdog_cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, preexec_fn=limited, timeout=600)


def test_a_checkpoint_the_disk_cannot_hold_is_one_line_and_leaves_a_restartable_folder(tmp_path: Path) -> None:
    data, out = labeled_folder(tmp_path / "data", per_class=4), tmp_path / "run"
    done = _with_file_size_limit(
        200_000, "train", "--data", data, *TINY_CLI, "--epochs", "1", "--out", out, cwd=tmp_path
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: cannot write {out / 'best.pt'}: File too large (the file size limit, ulimit -f); nothing to resume "
        "yet: free some space and start the run again"
    )
    assert not out.exists()


def test_a_torchscript_export_the_disk_cannot_hold_is_one_line_and_leaves_nothing(
    hostile: HostileRuns, tmp_path: Path
) -> None:
    out = tmp_path / "model.torchscript"
    done = _with_file_size_limit(
        200_000, "export", hostile.model, "--format", "torchscript", "--out", out, cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr[-2000:]  # not 134: the interpreter aborted from C++
    assert done.stderr.strip().splitlines()[-1] == f"error: cannot write {out}: File too large"
    assert list(tmp_path.iterdir()) == []  # no hidden temp folder either


def test_two_classes_that_print_alike_are_one_line_naming_both(tmp_path: Path) -> None:
    """A folder named with the byte 0xff and one named `chat\\xff` literally both printed as chat\\xff."""
    for k, name in enumerate((b"chat\xff", b"chat\\xff", b"dog")):
        for i in range(3):
            make_image(tmp_path / "data" / os.fsdecode(name) / f"{i}.png", CLASS_COLORS[k], (40 + i, 36))
    line = error_line(catdog("train", "--data", tmp_path / "data", *TINY_CLI, "--epochs", "1", "--out", tmp_path / "r"))
    assert "print alike as chat\\xff" in line and repr(b"chat\xff") in line and repr(b"chat\\xff") in line
    assert not (tmp_path / "r").exists()
