"""Every option of every command, fed bad values, is refused the same way: exit code 1 or 2, one line on
stderr that names the option or the value, no traceback, and nothing written anywhere.

The options are read from the Typer app itself, so a new option is covered the day it is added: numbers get
negative, zero, NaN, infinite and huge values by their type; every other option must say in ROLES what it
takes (an existing folder, a new file, a name...), and gets a file where a folder is expected and the reverse,
a missing path, an unreadable path, a FIFO, a place nothing can be written, or a name that does not exist.
Each case must fail before any heavy work: the valid command lines below train or evaluate for real, so an
option that slipped through would be caught by its exit code, and slowly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import typing
import zipfile
from pathlib import Path

import pytest
import typer
from helpers import catdog, make_image, snapshot

from catdog_cli.cli.app import app
from catdog_cli.models import checkpoints
from catdog_cli.models.backbones import build_model

COMMANDS = typer.main.get_command(app).commands

# What each non-numeric, non-flag option takes; a new one must be added here (the test below says so).
ROLES = {
    "names": "dataset-name",
    "root": "write-folder",
    "source": "archive",
    "sha256": "hex",
    "weights": "weights",
    "data": "data",
    "backbone": "backbone",
    "strategy": "strategy",
    "device": "device",
    "out": "out-folder",
    "resume": "run-folder",
    "model": "checkpoint",
    "split": "split",
    "report": "new-file",
    "paths": "images",
    "csv_file": "new-file",
    "sort_into": "write-folder",
    "backbones": "backbones",
    "strategies": "strategies",
    "fmt": "export-format",
    "parity_images": "images",
    "explain": "write-folder",
    "precision": "precision",
    "runtime": "runtime",
    "ood": "ood-method",
    "unknown_data": "images",
    "name": "run-name",
    "log": "tracker",
    "log_uri": "mlflow-uri",
    "sort": "runs-sort",
    "fail_on": "level",
}
COMMAND_ROLES = {  # where an option of the same name takes something else
    ("export", "out"): "new-file",
    ("runs", "root"): "runs-folder",
    **{("runs", name): "filter" for name in ("data", "backbone", "strategy")},
}
# every other number must be above zero (the recipe's 0 is "off")
ZERO_IS_VALID = {
    "int8_tolerance",
    "seed",
    "val_split",
    "workers",
    "cache_gib",
    "min_confidence",
    "label_smoothing",
    "mixup",
    "cutmix",
}
AS_USER = os.geteuid() != 0  # root reads and writes whatever the permissions say
NUMBERS = ("-1", "0", "nan", "inf", "-inf", "1e30", "99999999999999999999")


def _bad_paths(tmp: Path) -> dict[str, str]:
    """Hostile paths, made once per test folder."""
    a_file = tmp / "a-file.txt"
    a_file.write_text("not what was asked for")
    a_folder = tmp / "a-folder"
    (a_folder / "x").mkdir(parents=True)
    (a_folder / "x" / "f.txt").write_text("x")
    locked = tmp / "locked"
    (locked / "inside").mkdir(parents=True)
    locked_file = tmp / "locked.bin"
    locked_file.write_bytes(b"\0garbage")
    fifo = tmp / "pipe.pt"
    os.mkfifo(fifo)
    for path in (locked, locked_file):
        path.chmod(0)
    return {
        "file": str(a_file),
        "folder": str(a_folder),
        "missing": str(tmp / "missing" / "x"),
        "below a file": str(a_file / "below"),
        "unreadable folder": str(locked),
        "unreadable file": str(locked_file),
        "fifo": str(fifo),
        "proc": "/proc/catdog-test/x",
    }


def bad_values(role: str, paths: dict[str, str]) -> list[str]:
    by_role = {
        "data": ["file", "missing", "unreadable folder", "fifo"],
        "out-folder": ["file", "below a file", "unreadable folder", "proc"],  # new or empty
        "write-folder": ["file", "below a file", "proc", *(["unreadable folder"] if AS_USER else [])],
        "run-folder": ["file", "missing", "folder", "unreadable folder"],
        "checkpoint": ["folder", "missing", "unreadable file", "fifo", "file"],
        "new-file": ["file", "folder", "missing", "below a file", "proc", "unreadable file", "fifo"],
        "images": ["missing"],
        "weights": ["folder", "missing", "fifo", "unreadable file"],
        "archive": ["missing", "file", "below a file"],
        "runs-folder": ["file", "missing", "fifo"],
    }
    words = {
        "dataset-name": ["../escape", "a/b"],
        "hex": ["zz", "12"],
        "backbone": ["resnet9000", "", "timm:"],
        "strategy": ["frezee", ""],
        "device": ["mps", "xpu", "meta", "cuda:x", ""],
        "split": ["vall", ""],
        "backbones": ["resnet9000", ",", "resnet18,bogus"],
        "strategies": ["bogus", ",", "freeze,thaw"],
        "weights": ["bogus"],
        "export-format": ["onnxx", ""],
        "precision": ["fp8", "", "BF16"],
        "runtime": ["tensorrt", "", "ONNX"],
        "ood-method": ["bogus", "", "KNN"],
        "run-name": ["a/b", ".hidden"],
        "tracker": ["wandb", ""],
        "mlflow-uri": ["http://127.0.0.1:1"],  # without --log mlflow
        "runs-sort": ["size", ""],
        "filter": [""],
        "level": ["sometimes", "", "ERROR"],
    }
    return [paths[k] for k in by_role.get(role, [])] + words.get(role, [])


def _annotation(param) -> type:
    """int, float, bool, str or Path: the option's type without Optional or list."""
    hint = param.type_descriptor.annotation
    while typing.get_origin(hint) in (typing.Union, types.UnionType, list):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for command, cmd in COMMANDS.items():
        for param in cmd.params:
            kind = _annotation(param)
            if kind is bool:
                continue
            if kind in (int, float):
                values = [v for v in NUMBERS if not (v == "0" and param.name in ZERO_IS_VALID)]
                if kind is int:
                    values.append("1.5")
                cases += [(command, param.name, v) for v in values]
            else:
                cases.append((command, param.name, "<role>"))
    return cases


def role(command: str, name: str) -> str:
    return COMMAND_ROLES.get((command, name), ROLES[name])


def test_every_option_has_a_role():
    unknown = sorted({name for _, name, value in _cases() if value == "<role>" and name not in ROLES})
    assert not unknown, f"say in ROLES what these options take, so that they get bad values: {unknown}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny dataset, a tiny real checkpoint, an image, an archive: every command line below works as it is."""
    tmp = tmp_path_factory.mktemp("options")
    data = tmp / "data"
    for k, name in enumerate(("cat", "dog")):
        for i in range(4):
            make_image(data / name / f"{i}.png", ((200, 40, 40), (40, 40, 200))[k], (36, 30))
    model = build_model("squeezenet1_1", 2, weights="none", seed=0)
    meta = {
        "backbone": "squeezenet1_1",
        "classes": ["cat", "dog"],
        "image_size": 32,
        "resize": 37,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "strategy": "freeze",
        "config": {},
        "data": str(data.resolve()),
    }
    checkpoints.save(tmp / "model.pt", model, meta)
    record = {"kind": "train", "config": {"data": str(data)}, "epochs": 1, "best_val_acc": 0.5, "interrupted": False}
    (tmp / "runs" / "train").mkdir(parents=True)
    (tmp / "runs" / "train" / "run.json").write_text(json.dumps(record))
    with zipfile.ZipFile(tmp / "photos.zip", "w") as z:
        for path in sorted(data.rglob("*.png")):
            z.write(path, path.relative_to(data).as_posix())
    return {
        "tmp": tmp,
        "data": str(data),
        "model": str(tmp / "model.pt"),
        "image": str(data / "cat" / "0.png"),
        "archive": str(tmp / "photos.zip"),
    }


def valid_command(command: str, world: dict, work: Path) -> list[str]:
    """A command line that does its job (quickly: random init, 32 px, one epoch)."""
    tiny = [
        "--weights",
        "none",
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--workers",
        "1",
    ]
    return {
        "fetch": ["fetch", "photos", "--from", world["archive"], "--root", str(work / "home")],
        "runs": ["runs", "train", "--root", str(world["tmp"] / "runs")],
        "train": ["train", "--data", world["data"], "--backbone", "squeezenet1_1", *tiny, "--out", str(work / "run")],
        "evaluate": ["evaluate", world["model"], "--data", world["data"], "--device", "cpu"],
        "predict": ["predict", world["model"], world["image"], "--device", "cpu"],
        "export": [
            "export",
            world["model"],
            "--format",
            "torchscript",
            "--out",
            str(work / "m.torchscript"),
            "--parity-images",
            world["image"],
        ],
        "compare": [
            "compare",
            "--data",
            world["data"],
            "--backbones",
            "squeezenet1_1",
            "--strategies",
            "freeze",
            *tiny,
            "--out",
            str(work / "cmp"),
        ],
        "lr-find": [
            "lr-find",
            "--data",
            world["data"],
            "--backbone",
            "squeezenet1_1",
            *tiny[:4],
            *tiny[6:],
            "--strategies",
            "freeze",
            "--steps",
            "11",
            "--out",
            str(work / "lr"),
        ],
        "check": ["check", world["data"], "--backbone", "squeezenet1_1", *tiny[:4], "--device", "cpu"],
    }[command]


def with_option(args: list[str], command: str, name: str, value: str) -> list[str]:
    """`args` with the option `name` set to `value` (replaced if there, else added); arguments by position."""
    param = next(p for p in COMMANDS[command].params if p.name == name)
    if name == "resume":  # a resumed run takes its options from its checkpoint
        return ["train", "--resume", value]
    if not param.opts[0].startswith("--"):  # an argument: the first one of its kind in the line
        position = {"names": 1, "model": 1, "paths": 2, "name": 1, "data": 1}[name]
        return [*args[:position], value, *args[position + 1 :]]
    flag = param.opts[0]
    if flag in args:
        i = args.index(flag)
        return [*args[: i + 1], value, *args[i + 2 :]]
    return [*args, flag, value]


CASES = [(c, n, v) for c, n, v in _cases() if n in ROLES or v != "<role>"]


@pytest.mark.parametrize(("command", "name", "value"), CASES, ids=[f"{c}-{n}-{v}" for c, n, v in CASES])
def test_a_bad_value_is_one_line_before_any_work(
    world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, name: str, value: str
) -> None:
    monkeypatch.chdir(tmp_path)  # a run folder made by mistake would show here (runs/...)
    monkeypatch.setenv("CATDOG_HOME", str(tmp_path / "home"))
    paths = _bad_paths(tmp_path)
    values = [value] if value != "<role>" else bad_values(role(command, name), paths)
    assert values, f"no bad values for {command} --{name}"
    for bad in values:
        before = snapshot(tmp_path), snapshot(world["tmp"])
        args = with_option(valid_command(command, world, tmp_path), command, name, bad)
        result = catdog(*args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code in (1, 2), (args, result.output)
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
        option = next(p for p in COMMANDS[command].params if p.name == name).opts[0]
        named = {option, bad, bad.strip(",").split(",")[-1], f"'{bad}'"} - {"", "'"}
        assert any(n in lines[0] for n in named), (args, lines[0])
        assert result.stdout == ""
        assert (snapshot(tmp_path), snapshot(world["tmp"])) == before, (args, "wrote something")


CHEAP_MISTAKES = [  # answered before torch is imported (torch alone takes seconds to import)
    ["train", "--data", "nosuch"],
    ["train", "--data", ".", "--strategy", "frezee"],
    ["train", "--data", ".", "--backbone", "resnet9"],
    ["train", "--data", ".", "--lr", "nan"],
    ["train", "--data", ".", "--device", "mps"],
    ["train", "--data", ".", "--weights", "missing.pth"],
    ["compare", "--data", "nosuch"],
    ["compare", "--data", ".", "--strategies", "freeze,thaw"],
    ["compare", "--data", ".", "--cache-gib", "nan"],
    ["evaluate", "missing.pt"],
    ["evaluate", "model.pt", "--split", "vall"],
    ["predict", "model.pt", "nosuch.jpg"],
    ["predict", "model.pt", ".", "--top-k", "0"],
    ["fetch", "--weights", "resnet9000"],
    ["train", "--resume", ".", "--lr", "inf"],
    ["export", "missing.pt"],
    ["export", "model.pt", "--format", "onnxx"],
    ["export", "model.pt", "--parity-images", "nosuch"],
    ["predict", "model.pt", ".", "--min-confidence", "2"],
    ["train", "--data", ".", "--mixup", "nan"],
    ["train", "--data", ".", "--strategy", "freeze-unfreeze", "--epochs", "1"],
    ["lr-find", "--data", ".", "--strategies", "thaw"],
    ["lr-find", "--data", ".", "--end-lr", "inf"],
    ["train", "--data", ".", "--precision", "fp8"],
    ["predict", "model.pt", ".", "--precision", "half"],
    ["train", "--data", ".", "--log", "wandb"],
    ["compare", "--data", ".", "--log-uri", "http://127.0.0.1:1"],
    ["lr-find", "--data", ".", "--name", "a/b"],
    ["runs", "--sort", "size"],
    ["check", ".", "--backbone", "resnet9"],
    ["check", ".", "--weights", "missing.pth"],
    ["check", ".", "--fail-on", "sometimes"],
    ["compare", "--data", ".", "--strategies", "freeze,freeze"],
    ["compare", "--data", ".", "--strategies", "freeze-unfreeze", "--epochs", "1"],
    ["compare", "--data", ".", "--backbones", "resnet18", "--weights", "resnet18=a.pth,resnet18=b.pth"],
    ["lr-find", "--data", ".", "--strategies", "freeze,freeze"],
    ["export", "model.pt", "--format", "torchscript", "--out", ""],
    ["predict", "model.pt", ".", "--csv", ""],
]


def test_cheap_mistakes_are_answered_before_torch_is_imported(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"not read")
    code = (
        "import json, sys; from typer.testing import CliRunner; from catdog_cli.cli.app import app\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    r = CliRunner().invoke(app, args)\n"
        "    assert r.exit_code in (1, 2) and r.stderr.startswith('error: '), (args, r.output)\n"
        "    assert 'torch' not in sys.modules, ('torch imported by', args)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(CHEAP_MISTAKES)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
