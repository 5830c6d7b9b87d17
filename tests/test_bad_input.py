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
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import Result
from conftest import CLASS_COLORS, make_image
from PIL import Image, ImageFile
from typer.testing import CliRunner

from catdog_cli import checkpoints
from catdog_cli.backbones import TransferModel
from catdog_cli.cli import app
from catdog_cli.data import ImageError, open_rgb
from catdog_cli.engine import sort_into_folders
from catdog_cli.errors import OUT_OF_MEMORY, CatdogError
from catdog_cli.paths import new_run_dir
from catdog_cli.render import RichEvents

TINY = ("--backbone", "squeezenet1_1", "--weights", "none", "--image-size", "32", "--device", "cpu")


def catdog(*args: object) -> Result:
    """The CLI in-process, on a wide console (one line per message); it must end at the error boundary."""
    result = CliRunner(env={"COLUMNS": "1000"}).invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def error_line(result: Result) -> str:
    """A refused command: exit code 1, and its message is the last line of stderr."""
    assert result.exit_code == 1, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), result.stderr
    return line


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def labeled_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 8) -> Path:
    """root/<class>/imgN.png, one color per class (catdog splits it into train and val)."""
    for k, name in enumerate(classes):
        for i in range(per_class):
            make_image(root / name / f"img{i}.png", CLASS_COLORS[k], (40 + i, 36), shade=i * 4)
    return root


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file's size and mtime: equal snapshots mean nothing was written."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- the hostile folder -----------------------------------------------------------------------------------


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height pixels: a few bytes on disk, gigabytes if decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


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
    trained = catdog("train", "--data", root, *TINY, "--epochs", "1", "--batch-size", "4", "--out", tmp / "run",
                     "--json")
    model = tmp / "run" / "best.pt"
    evaluated = catdog("evaluate", model, "--data", root, "--split", "train", "--device", "cpu", "--json")
    predicted = catdog("predict", model, root / "train", "--device", "cpu", "--json")
    return HostileRuns(root, ok_json(trained), trained.stderr.splitlines(), ok_json(evaluated), ok_json(predicted),
                       model)


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
    for note in (f"{root / 'train' / 'cat'}: ignored 1 non-image file(s)",  # notes.txt; .DS_Store, Thumbs.db silent
                 f"{root / 'train' / 'empty'}: no images, class left out",
                 "val: class folder(s) bird not among the classes, left out",
                 "val: no images of fox"):
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
    line = error_line(catdog("train", "--data", root, *TINY, "--out", tmp_path / "run"))
    assert line == (f"error: {root} has 1 class folder(s) with images; a classifier needs at least 2 "
                    "(expected DIR/<class>/*.jpg or DIR/train/<class>/*.jpg)")
    assert not (tmp_path / "run").exists()


def test_a_dataset_without_one_decodable_training_image_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            (root / split / name / "broken.jpg").write_text("not a picture")
    line = error_line(catdog("train", "--data", root, *TINY, "--out", tmp_path / "run"))
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
def test_a_checkpoint_carrying_code_is_refused_and_the_code_never_runs(hostile: HostileRuns, tmp_path: Path,
                                                                       command: str) -> None:
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"format": checkpoints.FORMAT, "backbone": "squeezenet1_1", "payload": Payload(marker)}, evil)
    line = error_line(catdog(*command_on(command, evil, hostile, tmp_path)))
    where = tmp_path / "run" / "last.pt" if command == "resume" else evil
    assert line == f"error: {where} is not a catdog checkpoint (it holds code or objects other than tensors); " \
                   "refusing to load it"
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
def test_a_checkpoint_with_our_tag_but_not_our_contents_is_refused(hostile: HostileRuns, tmp_path: Path,
                                                                   command: str) -> None:
    forged = tmp_path / "forged.pt"
    torch.save({"format": checkpoints.FORMAT, "backbone": "resnet18"}, forged)
    line = error_line(catdog(*command_on(command, forged, hostile, tmp_path)))
    assert line.endswith("is an incomplete catdog checkpoint (no classes, image_size, resize, mean, std, state_dict); "
                         "refusing to load it")


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


# --- resume: only the same run, only into its own folder ------------------------------------------------------


def interrupt_at(tmp: Path, epoch: int, step: int) -> Path:
    """A 2-epoch run (6 steps each) that gets a real SIGINT at `step` of `epoch`, in-process: the engine's handler
    catches it, so the run stops after that step and saves last.pt. Returns the run folder."""
    data = labeled_folder(tmp / "data")
    progress = {"task": "", "steps": 0}

    def task(self, description: str, total: int) -> None:
        progress.update(task=description, steps=0)

    def advance(self, n: int = 1, **info: float) -> None:
        progress["steps"] += n
        if progress["task"].startswith(f"epoch {epoch}/") and progress["steps"] == step:
            signal.raise_signal(signal.SIGINT)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RichEvents, "task", task)
        mp.setattr(RichEvents, "advance", advance)
        result = catdog("train", "--data", data, *TINY, "--epochs", "2", "--batch-size", "2", "--out", tmp / "run")
    assert result.exit_code == 130
    assert f"interrupted: saved {tmp / 'run' / 'last.pt'}" in result.output
    return tmp / "run"


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return interrupt_at(tmp_path_factory.mktemp("interrupted"), epoch=2, step=3)


def assert_every_step_taken_once(out: Path, epochs: int, steps_per_epoch: int) -> None:
    """The resumed run's scheduler and optimizer went on from where they stopped: not restarted, nothing redone."""
    last = checkpoints.load(out / "last.pt")
    assert last["scheduler"]["last_epoch"] == epochs * steps_per_epoch
    assert all(s["step"].item() == epochs * steps_per_epoch for s in last["optimizer"]["state"].values())


def test_resume_mid_epoch_continues_from_the_next_step(tmp_path: Path) -> None:
    out = interrupt_at(tmp_path, epoch=2, step=3)
    state = checkpoints.load(out / "last.pt")["state"]
    assert (state["epoch"], state["step"], len(state["history"])) == (1, 3, 1)
    done = ok_json(catdog("train", "--resume", out, "--device", "cpu", "--json"))
    assert not done["interrupted"] and done["epochs"] == 2 and len(done["history"]) == 2
    assert_every_step_taken_once(out, epochs=2, steps_per_epoch=6)


@pytest.mark.parametrize("options, message", [
    (("--backbone", "resnet18"), "--backbone resnet18 differs from the run being resumed (squeezenet1_1); a resumed "
                                 "run keeps its options (only --device, --workers, --cache-gib, --compile may change)"),
    (("--epochs", "5"), "--epochs 5 differs from the run being resumed (2)"),
    (("--lr", "0.5"), "--lr 0.5 differs from the run being resumed (0.0001)"),  # the lr it really used
    (("--out", "elsewhere"), "--out elsewhere: a resumed run continues in its own folder"),
], ids=["backbone", "epochs", "lr", "out"])
def test_resume_with_other_options_is_refused_before_any_work(interrupted: Path, options: tuple[str, ...],
                                                              message: str) -> None:
    before = snapshot(interrupted)
    assert message in error_line(catdog("train", "--resume", interrupted, *options))
    assert snapshot(interrupted) == before


def test_resume_refuses_data_whose_classes_changed(interrupted: Path) -> None:
    data = Path(checkpoints.load(interrupted / "last.pt")["data"])
    labeled_folder(data, classes=("fox",), per_class=3)
    try:
        before = snapshot(interrupted)
        line = error_line(catdog("train", "--resume", interrupted))
    finally:
        shutil.rmtree(data / "fox")
    assert line == (f"error: the classes in {data} changed since the run started (now cat, dog, fox; then cat, dog); "
                    "start a new run instead")
    assert snapshot(interrupted) == before


def test_resume_needs_a_last_checkpoint_and_an_unfinished_run(hostile: HostileRuns, tmp_path: Path) -> None:
    line = error_line(catdog("train", "--resume", tmp_path))
    assert line == f"error: nothing to resume in {tmp_path}: it has no last.pt"
    run = hostile.model.parent
    line = error_line(catdog("train", "--resume", run))
    assert line == f"error: {run} already ran all 1 epoch(s); nothing to resume"


def test_train_without_data_or_resume_says_what_it_needs() -> None:
    line = error_line(catdog("train"))
    assert line == "error: train needs --data DIR (or --resume OUT to continue an interrupted run)"


# --- disk and output safety ---------------------------------------------------------------------------------


def test_train_never_writes_into_an_existing_run(hostile: HostileRuns) -> None:
    run = hostile.model.parent
    before = snapshot(run)
    line = error_line(catdog("train", "--data", hostile.root, *TINY, "--out", run))
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
    assert line == f"error: {existing} already exists; choose a new --csv file"
    assert existing.read_text() == "the user's own file"


def test_sort_into_copies_by_label_renames_clashes_and_leaves_originals(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    a, b = make_image(src / "a" / "x.jpg", CLASS_COLORS[0]), make_image(src / "b" / "x.jpg", CLASS_COLORS[1])
    originals = snapshot(src)
    dest = tmp_path / "sorted"
    make_image(dest / "cat" / "x.jpg", CLASS_COLORS[2])  # already there: the user's
    theirs = snapshot(dest)
    rows = [{"path": str(a), "label": "cat"}, {"path": str(b), "label": "cat"},
            {"path": "zero.jpg", "error": "empty file"}]
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
    rows = ok_json(catdog("predict", hostile.model, hostile.root / "train", "--device", "cpu", "--sort-into", dest,
                          "--json"))
    labeled = [r for r in rows if "label" in r]
    assert len(labeled) == 20  # train/{cat,dog,fox}/0.png clash when they share a label: none is lost
    for row in labeled:
        copy = Path(row["copied_to"])
        assert copy.parent == dest / row["label"] and copy.read_bytes() == Path(row["path"]).read_bytes()
    assert len({r["copied_to"] for r in labeled}) == 20
    assert all("copied_to" not in r for r in rows if "error" in r)
    assert snapshot(hostile.root) == originals


# --- resource errors ------------------------------------------------------------------------------------


def test_cuda_out_of_memory_during_training_says_to_lower_the_batch_size(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def oom(self, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(TransferModel, "forward", oom)
    data = labeled_folder(tmp_path / "data", per_class=4)
    line = error_line(catdog("train", "--data", data, *TINY, "--epochs", "1", "--out", tmp_path / "run"))
    assert line == f"error: {OUT_OF_MEMORY}"
    assert "--batch-size" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
@pytest.mark.parametrize("command", ["train", "evaluate", "predict"])
def test_device_cuda_without_a_gpu_is_a_clear_error(hostile: HostileRuns, tmp_path: Path, command: str) -> None:
    args = {"train": ("train", "--data", hostile.root, "--out", tmp_path / "run", "--weights", "none"),
            "evaluate": ("evaluate", hostile.model),
            "predict": ("predict", hostile.model, hostile.root / "train" / "dog" / "0.png")}[command]
    line = error_line(catdog(*args, "--device", "cuda"))
    assert line == "error: --device cuda: no CUDA GPU is visible to PyTorch (use --device cpu or auto)"
    assert not (tmp_path / "run").exists()


# --- interruptions: signals, kill -9, a writer dying mid-way ----------------------------------------------


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_writer_dying_midway_leaves_the_previous_file(tmp_path: Path, error: BaseException) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(b"the previous complete checkpoint")

    def dies(f) -> None:
        f.write(b"the first half of the new one")
        raise error

    with pytest.raises(type(error)):
        checkpoints.atomic_write(path, dies)
    assert path.read_bytes() == b"the previous complete checkpoint"
    assert os.listdir(tmp_path) == ["last.pt"]  # no temp file left behind


SIGNAL_RUN = ("--epochs", "4", "--batch-size", "2")  # 16 steps per epoch: a signal lands mid-run


def start_training(data: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "CATDOG_HOME": str(out.parent / "home")}
    cmd = [sys.executable, "-m", "catdog_cli", "train", "--data", str(data), *TINY, *SIGNAL_RUN, "--out", str(out),
           "--json"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=out.parent)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, seconds: float = 180) -> None:
    """Poll (bounded) until `condition`; fail with the run's output if it ends first."""
    deadline = time.monotonic() + seconds
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"train ended early with {proc.returncode}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("train made no progress before the deadline")
        time.sleep(0.002)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_last_and_resume_finishes_the_same_run(tmp_path: Path, signum: int) -> None:
    data, out = labeled_folder(tmp_path / "data", per_class=20), tmp_path / "run"
    proc = start_training(data, out)
    wait_for(lambda: (out / "last.pt").exists(), proc)  # epoch 1 is done: the engine's handler is installed
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    note = f"interrupted: saved {out / 'last.pt'}; continue with `catdog train --resume {out}`"
    assert note in " ".join(stderr.split())  # a narrow console may wrap it
    stopped = json.loads(stdout)
    assert stopped["interrupted"] and 1 <= stopped["epochs"] < 4
    state = checkpoints.load(out / "last.pt")["state"]
    assert state["epoch"] == stopped["epochs"] and len(state["history"]) == state["epoch"]

    # the same command again with --resume (typed options agree; --device may always be given)
    done = ok_json(catdog("train", "--resume", out, "--data", data, *TINY, *SIGNAL_RUN, "--json"))
    assert not done["interrupted"]
    assert done["epochs"] == 4 and [h["epoch"] for h in done["history"]] == [1, 2, 3, 4]
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + 4
    assert_every_step_taken_once(out, epochs=4, steps_per_epoch=16)
    checkpoints.load(out / "best.pt")


def test_kill_9_leaves_only_complete_checkpoints(tmp_path: Path) -> None:
    data, out = labeled_folder(tmp_path / "data", per_class=20), tmp_path / "run"
    proc = start_training(data, out)
    wait_for(lambda: (out / "last.pt").exists(), proc)
    # the next checkpoint write shows as a temp file: kill the writer while it is there, if we catch it
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline and not any(p.suffix == ".tmp" for p in out.iterdir()):
        time.sleep(0.001)
    proc.kill()
    proc.communicate(timeout=60)
    saved = sorted(out.glob("*.pt"))
    assert out / "last.pt" in saved
    for path in saved:
        ckpt = checkpoints.load(path)
        assert ckpt["classes"] == ["cat", "dog"]
    assert all(p.name.startswith(".") for p in out.iterdir() if p.suffix == ".tmp")  # never taken for a checkpoint
