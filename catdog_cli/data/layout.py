"""What a fetched source looks like, rebuilt as the standard layout: find its root, plan the splits and classes
(Kaggle's cat.N.jpg names, class folders, unlabeled images), leave out what is unusable, place and verify.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image

from catdog_cli.core.files import copy_new, publish_new
from catdog_cli.data.archives import (
    MAX_BYTES,
    MAX_SIZE_HINT,
    Budget,
    FetchProgress,
    extract,
    size_text,
)
from catdog_cli.data.catalog import (
    ARCHIVE_SUFFIXES,
    KAGGLE_NAME,
    MAX_NESTING,
    SPLIT_ORDER,
    VAL_FRACTION,
    DatasetSummary,
    Request,
    Source,
)
from catdog_cli.data.folders import Walk, is_image_name, split_of, stratified_split
from catdog_cli.errors import CatdogError

Plan = dict[str, dict[str, list[Path]]]  # {split: {class: images}}; '' is the class of unlabeled images


def _find_root(
    tree: Path, work: Path, budget: Budget | None, max_bytes: int | None, progress: FetchProgress, depth: int = 0
) -> Path:
    """Step into wrapper folders (hymenoptera_data/, PetImages/'s parent), and unpack archives inside
    archives (Kaggle's dogs-vs-cats.zip holds train.zip and test1.zip)."""
    folder, seen, walk = tree, set(), Walk(tree)
    while True:
        dirs, files = walk.listing(folder)
        inner = [p for p in files if p.name.lower().endswith(ARCHIVE_SUFFIXES)]
        if not dirs and inner and not any(map(is_image_name, files)):
            return _unpack_inner(inner, work, budget, max_bytes, progress, depth)
        seen.add(os.path.realpath(folder))
        if (
            len(dirs) == 1
            and split_of(dirs[0]) is None
            and not any(map(is_image_name, files))
            and os.path.realpath(dirs[0]) not in seen
        ):
            folder = dirs[0]
            continue
        return folder


def _unpack_inner(
    inner: list[Path], work: Path, budget: Budget | None, max_bytes: int | None, progress: FetchProgress, depth: int
) -> Path:
    """Unpack every inner archive into one tree; a path two of them hold is refused, never overwritten. What
    they write counts toward the outer archive's budget."""
    if depth >= MAX_NESTING:
        raise CatdogError(f"refusing {inner[0].name}: archives nested more than {MAX_NESTING + 1} deep")
    budget = budget or Budget(sum(p.stat().st_size for p in inner), max_bytes)  # archives in a folder
    nested = work / f"nested{depth}"
    for archive in inner:
        extract(archive, nested, budget, progress, f"extracting {archive.name}")
    return _find_root(nested, work, budget, max_bytes, progress, depth + 1)


def _rel(path: Path, base: Path) -> str:
    """How `skipped` names a file: as it is in the source, a folder with a trailing '/'."""
    rel = path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)
    return rel + "/" if path.is_dir() else rel


Skipped = list[tuple[Path, str]]  # (file or folder, why it is left out)


def _images(folder: Path, walk: Walk, skipped: Skipped) -> list[Path]:
    """Every image under folder, walked by the same rules as training data; other files are reported as skipped."""
    images, others = walk.images(folder)
    skipped += others
    return images


def _labeled(folder: Path, walk: Walk, skipped: Skipped) -> dict[str, list[Path]] | None:
    """{class: images} from class folders or from Kaggle file names; None when the images carry no label."""
    dirs, files = walk.listing(folder)
    loose = [p for p in files if is_image_name(p)]
    classes = {d.name: imgs for d in dirs if (imgs := _images(d, walk, skipped))}
    if classes:
        skipped += [(p, "not in a class folder") for p in loose]
        return classes
    if loose and all(KAGGLE_NAME.fullmatch(p.name) for p in loose):
        by_label: dict[str, list[Path]] = {}
        for p in loose:
            by_label.setdefault(KAGGLE_NAME.fullmatch(p.name).group(1).lower(), []).append(p)
        return by_label
    return None


def _plan(root: Path, walk: Walk, skipped: Skipped) -> Plan:
    """{split: {class: images}} for any of the layouts catdog reads: split folders (train/, val/ or
    validation/, test/, test1/) holding class folders or Kaggle file names, or class folders alone, or
    Kaggle file names alone."""
    dirs, _ = walk.listing(root)
    split_dirs = [(split, d) for d in dirs if (split := split_of(d)) is not None]
    if not split_dirs:
        labeled = _labeled(root, walk, skipped)
        if labeled is None:
            raise CatdogError(
                "cannot tell the classes: expected split folders (train/, val/), class folders "
                "(cat/, dog/) or Kaggle file names (cat.1.jpg)"
            )
        return {"train": labeled}
    skipped += [(d, "not a split folder") for d in dirs if split_of(d) is None]
    plan: Plan = {}
    for split, d in split_dirs:
        labeled = None if split == "unlabeled" else _labeled(d, walk, skipped)
        if labeled is None:  # e.g. Kaggle's test1/1.jpg
            plan.setdefault("unlabeled", {}).setdefault("", []).extend(_images(d, walk, skipped))
        else:
            for cls, files in labeled.items():
                plan.setdefault(split, {}).setdefault(cls, []).extend(files)
    return plan


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _problem(path: Path, decode: bool) -> str | None:
    """Why an image is unusable, or None. Opening it catches empty and non-image files for the cost of
    a header read; decode=True decodes it all (at 1/8 scale: fast, yet it still reads every byte)."""
    try:
        if os.stat(path).st_size == 0:
            return "empty file"
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:  # a broken link, an unreadable file
        return f"cannot read ({e.strerror or e})"
    try:
        with warnings.catch_warnings():  # PIL warns about odd EXIF data; only errors matter here
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                if decode:
                    im.draft(None, (1, 1))
                    im.load()
                else:
                    im.verify()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        return f"cannot decode ({e})"
    return None


def _keep(plan: Plan, drop: dict[Path, str], skipped: Skipped) -> Plan:
    """The plan without the files in drop ({file: why}), each one reported."""
    kept: Plan = {}
    for split, classes in plan.items():
        for cls, ps in classes.items():
            kept.setdefault(split, {})[cls] = [p for p in ps if p not in drop]
            skipped += [(p, drop[p]) for p in ps if p in drop]
    return kept


def _unusable(plan: Plan, decode: bool, progress: FetchProgress) -> dict[Path, str]:
    files = [p for classes in plan.values() for ps in classes.values() for p in ps]
    progress.start(sum(map(_size, files)), "checking images")
    bad = {}
    for p in files:
        if reason := _problem(p, decode):
            bad[p] = reason
        progress.advance(_size(p))
    progress.done()
    return bad


def _renamed(plan: Plan, rename: dict[str, str]) -> Plan:
    """Source folder names to catdog's class names (cats/ -> cat); folders that end up with one name merge."""
    out: Plan = {}
    for split, classes in plan.items():
        for cls, ps in classes.items():
            out.setdefault(split, {}).setdefault(rename.get(cls, cls), []).extend(ps)
    return out


def _place(src: Path, folder: Path, move: bool) -> None:
    """Move (or copy, from a user's folder) src into folder; a same-named file (nested source folders
    flattened into one class folder) gets -1, -2, ..., never replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    if move:
        publish_new(src, folder, src.name)
    else:
        copy_new(src, folder)


def _folder(out: Path, split: str, cls: str) -> Path:
    return out / split / cls if cls else out / split


def _place_all(plan: Plan, out: Path, work: Path, limit: int) -> None:
    """Move what fetch unpacked itself; copy a user's files (at most `limit` bytes of them)."""
    files = [p for classes in plan.values() for ps in classes.values() for p in ps]
    copied = sum(_size(p) for p in files if not p.is_relative_to(work))
    if copied > limit:
        raise CatdogError(
            f"the images to copy take {size_text(copied)}, over the {size_text(limit)} limit; {MAX_SIZE_HINT}"
        )
    for split in SPLIT_ORDER:
        for cls, ps in plan.get(split, {}).items():
            for p in ps:
                _place(p, _folder(out, split, cls), p.is_relative_to(work))


def _verify(plan: Plan, out: Path, name: str) -> None:
    """Count what arrived, per split and class, before the marker says the dataset is complete."""
    for split, classes in plan.items():
        for cls, ps in classes.items():
            folder = _folder(out, split, cls)
            placed = (
                sum(1 for f in os.scandir(folder) if f.is_file() and not f.name.startswith("."))
                if folder.is_dir()
                else 0
            )
            if placed != len(ps):
                raise CatdogError(
                    f"{name}: {placed} of {len(ps)} images of {_folder(Path(split), '', cls)} arrived "
                    "in the new dataset; nothing was kept (try again)"
                )


def build(
    tree: Path, work: Path, req: Request, entry: Source | None, budget: Budget | None, progress: FetchProgress
) -> DatasetSummary:
    """Rebuild the source tree as out/{train,val,test}/<class>/* + out/unlabeled/*, leaving bad images out."""
    root = _find_root(tree, work, budget, req.max_bytes, progress)
    base = tree if root.is_relative_to(tree) else root  # `skipped` names files as they are in the source
    walk, skipped = Walk(base), []
    plan = _plan(root, walk, skipped)
    dropped = walk.duplicates()
    skipped = [(p, why) for p, why in skipped + walk.cut if p not in dropped]  # a file reached twice: once
    plan = _keep(plan, {p: f"same file as {_rel(k, base)}" for p, k in dropped.items()}, skipped)
    plan = _keep(plan, _unusable(plan, entry.decode if entry else False, progress), skipped)
    plan = _renamed(plan, entry.classes if entry else {})
    if not any(plan.get("train", {}).values()):
        raise CatdogError(
            "found no labeled training images (expected train/<class>/ folders, class folders "
            "or Kaggle file names such as cat.1.jpg)"
        )
    if "val" not in plan:  # e.g. Kaggle's train/ only: hold out 20 % of each class
        plan["train"], plan["val"] = stratified_split(plan["train"], VAL_FRACTION, seed=0)
    out = work / "out"
    _place_all(plan, out, work, req.max_bytes or MAX_BYTES)
    _verify(plan, out, req.name)
    classes = sorted({c for s in ("train", "val", "test") for c, ps in plan.get(s, {}).items() if ps})
    splits = {s: sum(map(len, plan[s].values())) for s in SPLIT_ORDER if s in plan}
    return DatasetSummary(
        name=req.name,
        path=req.final,
        classes=classes,
        splits=splits,
        skipped=[(_rel(p, base), why) for p, why in skipped],
    )
