"""Finding labeled images in a folder: the splits, their classes, and the split a run recorded.

Layouts: `DIR/{train,val|valid|validation}/<class>/*` (optional `DIR/test/<class>/*`), or `DIR/<class>/*`
split stratified by `val_split` with a seed (the same split every time). `--data NAME` is a dataset that
`catdog fetch` put in the data root.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from catdog_cli.core.formatting import printable, printed_alike
from catdog_cli.core.paths import data_note, resolve_data
from catdog_cli.data.folders import Walk, split_of, stratified_split, visible_dirs
from catdog_cli.errors import CatdogError

LABELED_SPLITS = ("train", "val", "test")
# the stand-in some archives ship where a photo went missing (hymenoptera's train/ants/imageNotFound.gif): by its
# name, it is no photo of its class, and training on it as one would teach the model a logo
PLACEHOLDER = re.compile(r"image[-_ ]?not[-_ ]?found|placeholder", re.IGNORECASE)


@dataclass
class Split:
    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class Dataset:
    root: Path
    classes: list[str]
    splits: dict[str, Split]  # "train", "val", "test", or "all" for a folder evaluated whole
    origin: str  # how val was made: "folders" or "random 20% (seed 0)"
    notes: list[str] = field(default_factory=list)  # what was left out and why, for the user
    left_out: list[tuple[Path, str]] = field(default_factory=list)  # files outside a run's recorded split, and why
    missing: list[str] = field(default_factory=list)  # files of a run's recorded split that are gone

    def split(self, name: str) -> Split:
        if name == "all":
            merged = Split()
            for s in self.splits.values():
                merged.paths += s.paths
                merged.labels += s.labels
            return merged
        if name not in self.splits:
            raise CatdogError(f"{self.root} has no {name!r} split (it has: {', '.join(self.splits)})")
        return self.splits[name]


def _read_splits(root: Path, folders: dict[str, Path], notes: list[str]) -> dict[str, dict[str, list[Path]]]:
    """{split: {class: images}} of each split folder's class folders, read with one `Walk` of the dataset: a file
    reached from two class or split folders (a link from train/cat to ../dog or ../../val/cat) is taken once,
    where it really is, so it never gets a second label or counts in train and val."""
    walk = Walk(root)
    read = {split: _class_images(folder, walk, notes) for split, folder in folders.items()}
    dropped = walk.duplicates()
    if dropped:
        notes.append(f"{len(dropped)} file(s) reached twice (through links) taken once, where they really are")
    found: dict[str, dict[str, list[Path]]] = {}
    for split, by_class in read.items():
        found[split] = {}
        for d, images in by_class.items():
            if kept := [p for p in images if p not in dropped]:
                found[split][d.name] = kept
            else:
                notes.append(f"{d}: no images, class left out")
    return found


def _class_images(folder: Path, walk: Walk, notes: list[str]) -> dict[Path, list[Path]]:
    found = {}
    for d in visible_dirs(folder):
        try:
            with os.scandir(d):  # os.walk would pass over an unreadable folder without a word
                pass
        except OSError as exc:
            notes.append(f"{d}: cannot read it ({exc.strerror or exc}), class left out")
            continue
        images, others = walk.images(d)
        if others:
            notes.append(f"{d}: ignored {len(others)} non-image file(s)")
        stand_ins = [p for p in images if PLACEHOLDER.search(p.stem)]
        notes += [
            f"{p}: left out, a placeholder for a missing photo (by its name), not a photo of {d.name}"
            for p in stand_ins
        ]
        found[d] = [p for p in images if p not in stand_ins]
    return found


def _labeled(by_class: dict[str, list[Path]], classes: list[str]) -> Split:
    split = Split()
    for label, name in enumerate(classes):
        for p in by_class.get(name, []):
            split.paths.append(p)
            split.labels.append(label)
    return split


def shard(split: Split, rank: int, world: int, seed: int, equal: bool) -> Split:
    """This rank's part of a split under torchrun: a seeded deal of the images, disjoint across ranks.

    `equal` (for train) trims every share to the same length, so each rank takes the same number of steps.
    """
    order = list(range(len(split)))
    random.Random(seed).shuffle(order)
    if equal:
        order = order[: len(order) // world * world]
    mine = sorted(order[rank::world])
    return Split([split.paths[i] for i in mine], [split.labels[i] for i in mine])


def _find_split_dir(root: Path, split: str) -> Path | None:
    return next((d for d in visible_dirs(root) if split_of(d) == split), None)


def _discover(
    root: Path, val_split: float | None, seed: int, notes: list[str]
) -> tuple[dict[str, dict[str, list[Path]]], str, Path]:
    """{split: {class: files}}, where val came from, and the folder whose class folders define the classes."""
    train_dir = _find_split_dir(root, "train")
    if train_dir is not None:
        found = _read_splits(root, {s: d for s in LABELED_SPLITS if (d := _find_split_dir(root, s))}, notes)
        if "val" in found or val_split is None:
            return found, "folders", train_dir
        found["train"], found["val"] = stratified_split(found["train"], val_split, seed)
        return found, f"random {val_split:.0%} of train (seed {seed})", train_dir
    by_class = _read_splits(root, {"all": root}, notes)["all"]
    if val_split is None:
        return {"all": by_class}, "whole folder", root
    train, val = stratified_split(by_class, val_split, seed)
    return {"train": train, "val": val}, f"random {val_split:.0%} (seed {seed})", root


def _check_classes(
    found: dict[str, dict[str, list[Path]]], classes: list[str], reference: str, root: Path, notes: list[str]
) -> None:
    """Refuse reference-split classes a model cannot name; note val/test classes left out or missing."""
    for split, by_class in found.items():
        unknown = sorted(set(by_class) - set(classes))
        if unknown and split == reference:  # only with a model's classes: data it was not made for
            raise CatdogError(
                f"{root} has classes the model does not know: {', '.join(unknown)} (its classes: {', '.join(classes)})"
            )
        if unknown:  # a val/test class absent from train can never be predicted: say so, leave it out
            notes.append(f"{split}: class folder(s) {', '.join(unknown)} not among the classes, left out")
        missing = [c for c in classes if c not in by_class]
        if missing and split != reference:
            notes.append(f"{split}: no images of {', '.join(missing)}")


def load_dataset(
    data: str | Path,
    val_split: float | None = 0.2,
    seed: int = 0,
    classes: list[str] | None = None,
    recorded: dict[str, Any] | None = None,
    root: Path | None = None,
) -> Dataset:
    """Discover the layout. `val_split=None` keeps a folder without split folders whole (as "all").

    `classes` fixes the class list (a trained model's); otherwise it is the train split's class folders.
    `recorded`: the split a run trained on (`split_record`); train and val are then that split, among the files
    there now (see `_restore`), not a split derived again from a file list that may have changed.
    `root`: the folder `data` names, when a command's checks resolved it already (`resolve_data`).
    """
    root = resolve_data(data) if root is None else root
    read = data_note(data, root)  # a folder here read although a fetched dataset has its name
    notes: list[str] = [read] if read else []
    try:
        found, origin, class_root = _discover(root, val_split, seed, notes)
    except OSError as exc:  # a split folder that cannot be listed
        raise CatdogError(f"cannot read {exc.filename or root}: {exc.strerror or exc}") from None
    left_out: list[tuple[Path, str]] = []
    missing: list[str] = []
    if recorded is not None and "train" in found:
        left_out, missing = _restore(found, recorded, root, origin == "folders")
        notes += _restore_notes(left_out, missing)
    reference = "train" if "train" in found else "all"
    if classes is None:
        classes = sorted(found[reference])
        if len(classes) < 2:
            raise CatdogError(
                f"{class_root.absolute()} has {len(classes)} class folder(s) with images; a classifier needs at "
                "least 2 (expected DIR/<class>/*.jpg or DIR/train/<class>/*.jpg)" + (f"; {read}" if read else "")
            )
        if alike := printed_alike(classes):
            raise CatdogError(
                f"two class folders in {class_root.absolute()} print alike as {printable(alike[0])}, so no table, "
                f"JSON, CSV or label could tell them apart: one is named {os.fsencode(alike[0])!r}, the other "
                f"{os.fsencode(alike[1])!r} (the bytes of their names); rename one of them"
            )
    _check_classes(found, classes, reference, root, notes)
    splits = {s: _labeled(by_class, classes) for s, by_class in found.items()}
    if not any(len(s) for s in splits.values()):
        raise CatdogError(f"no images found in {root.absolute()}" + (f"; {read}" if read else ""))
    return Dataset(root, list(classes), splits, origin, notes, left_out, missing)


def no_val_reason(dataset: Dataset) -> str:
    """Why a run has nothing to validate on, and what will work."""
    if dataset.origin == "folders":
        val_dir = _find_split_dir(dataset.root, "val") or dataset.root / "val"
        return (
            f"no usable validation images in {val_dir}: put images in {val_dir}/<class>/, or remove that "
            "folder and catdog splits train into train and val (--val-split)"
        )
    return (
        f"no usable validation images in {dataset.root}: use a --val-split above 0 (each class needs at least "
        "2 images), or add a val/<class>/ folder"
    )


# --- the split a run used -------------------------------------------------------------------------------


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def split_record(dataset: Dataset) -> dict[str, Any]:
    """The files a run trained and validated on, relative to the data root and in split order: checkpoints keep
    it, so that evaluate and resume use this split, whatever was added, removed or moved since."""
    return {
        "origin": dataset.origin,
        **{
            name: [_relative(p, dataset.root) for p in dataset.splits[name].paths]
            for name in ("train", "val")
            if name in dataset.splits
        },
    }


def split_summary(record: dict[str, Any]) -> dict[str, Any]:
    """run.json's account of the split: the val files themselves, and the train files by count and digest."""
    train = record.get("train", [])
    digest = hashlib.sha256("\n".join(sorted(train)).encode("utf-8", "surrogatepass")).hexdigest()
    return {"origin": record["origin"], "val": record.get("val", []), "train": {"count": len(train), "sha256": digest}}


def recorded_files(recorded: dict[str, Any], splits: tuple[str, ...] = ("train", "val")) -> list[str]:
    """The relative paths a recorded split names (a damaged record's non-strings are no file)."""
    return [r for s in splits if isinstance(recorded.get(s), list) for r in recorded[s] if isinstance(r, str)]


def found_recorded(root: Path, recorded: dict[str, Any], splits: tuple[str, ...] = ("train", "val")) -> int:
    """How many of the recorded split's files are at their relative paths under `root`."""
    return sum(1 for r in recorded_files(recorded, splits) if os.path.isfile(root / r))


def holds_recorded(root: Path, recorded: dict[str, Any]) -> bool:
    """Whether `root` is the folder a run trained on, wherever it is now: a copy, a move, another machine. The split
    is recorded relative to the data root, so the match is on what is there (at least half of the recorded files at
    their relative paths), not on the absolute path the run saw."""
    total = len(recorded_files(recorded))
    return total > 0 and 2 * found_recorded(root, recorded) >= total


ADDED = "added since the run trained (not in its recorded split), left out"
LIKE_TRAINING = "named like one of the run's training images (moved or copied from train?), left out of val"


def _restore(
    found: dict[str, dict[str, list[Path]]], recorded: dict[str, Any], root: Path, val_folder: bool
) -> tuple[list[tuple[Path, str]], list[str]]:
    """Set found's train and val to the recorded split, in its order, among the files there now.

    A file recorded in train or val stays there. A file the run never saw is left out (it is neither the run's
    training data nor its val data), except a file added to a val/ folder: the user put it in val, so it counts,
    unless it bears the name of one of the run's training images (moved or copied from train/ since: a training
    image never counts as val). Returns (left out, with why) and the recorded files that are gone.
    """
    here = {
        _relative(p, root): (cls, p)
        for split in ("train", "val")
        for cls, paths in found.get(split, {}).items()
        for p in paths
    }
    trained = {PurePosixPath(r).name for r in recorded.get("train", [])}
    restored: dict[str, dict[str, list[Path]]] = {"train": {}, "val": {}}
    for split in ("train", "val"):
        for rel in recorded.get(split, []):
            if rel in here:
                cls, path = here[rel]
                restored[split].setdefault(cls, []).append(path)
    known = set(recorded.get("train", [])) | set(recorded.get("val", []))
    added_to_val = {p for paths in found.get("val", {}).values() for p in paths} if val_folder else set()
    left_out = []
    for rel, (cls, path) in here.items():
        if rel in known:
            continue
        if path not in added_to_val:
            left_out.append((path, ADDED))
        elif path.name in trained:
            left_out.append((path, LIKE_TRAINING))
        else:
            restored["val"].setdefault(cls, []).append(path)
    found["train"], found["val"] = restored["train"], restored["val"]
    return left_out, sorted(known - set(here))


def _restore_notes(left_out: list[tuple[Path, str]], missing: list[str], shown: int = 5) -> list[str]:
    notes = []
    for reason in sorted({why for _, why in left_out}):
        paths = sorted(str(p) for p, why in left_out if why == reason)
        more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
        notes.append(f"{len(paths)} file(s) {reason}: {', '.join(paths[:shown])}{more}")
    if missing:
        more = f" and {len(missing) - shown} more" if len(missing) > shown else ""
        notes.append(f"{len(missing)} file(s) of the run's recorded split are gone: {', '.join(missing[:shown])}{more}")
    return notes
