"""`catdog check --out DIR`: a cleaned copy of the dataset, the input left as it is, and a CSV of every decision.

Dropped: unreadable files, placeholders and constant images, and one file of each duplicate pair (of a leak, the
training copy, so val and test stay whole; within a split, the second file). Likely label errors (the confident
ones) go to `DIR/_review/<split>/<given label>/` to be looked at (catdog reads only the split folders, so it never
trains on them; in a folder without split folders `_review` would be a class, so there they go to `DIR-review/`),
or with --relabel into the suspected class's folder. Every other file is copied as it is, to the same place under DIR.
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path, PurePosixPath

from catdog_cli.core.files import atomic_write_text
from catdog_cli.core.findings import CheckResult
from catdog_cli.core.paths import check_folder_target
from catdog_cli.errors import CatdogError

DROPPED_KINDS = {"unreadable", "placeholder", "constant"}
REVIEW = "_review"
REVIEW_BESIDE = "{out}-review"  # a folder without split folders: beside DIR, not a class inside it


def decisions(result: CheckResult, files: list[str], relabel: bool) -> dict[str, tuple[str, str, str]]:
    """{path: (decision, why, where it goes under DIR or "")} for every file, paths relative to the dataset."""
    decided: dict[str, tuple[str, str, str]] = {}
    for p in result["problems"]:
        if p["kind"] in DROPPED_KINDS:
            decided[p["path"]] = ("dropped", f"{p['kind']}: {p['detail']}", "")
    for d in result["duplicates"]:
        a, b = d["a"], d["b"]
        if a["path"] in decided or b["path"] in decided:
            continue  # one of the two is gone already: the other stays
        drop, keep = (a, b) if d["leak"] and a["split"] == "train" else (b, a)
        what = "leak" if d["leak"] else "duplicate"
        decided[drop["path"]] = ("dropped", f"{what} ({d['kind']}) of {keep['path']}", "")
    for s in result["labels"]:
        if s["path"] in decided or not s["confident"]:  # out-voted only: too weak to act on
            continue
        parts = PurePosixPath(s["path"]).parts  # split/<class>/.../name, or <class>/.../name (the "all" layout)
        at = 1 if s["split"] != "all" else 0
        if relabel:
            to = PurePosixPath(*parts[:at], s["suspected"], *parts[at + 1 :])
            decided[s["path"]] = ("relabeled", f"looks like {s['suspected']} ({s['probability']:.0%})", str(to))
        else:
            to = PurePosixPath(REVIEW if at else f"../{REVIEW_BESIDE}", s["path"])
            decided[s["path"]] = ("review", f"looks like {s['suspected']} ({s['probability']:.0%})", str(to))
    return {f: decided.get(f, ("kept", "", f)) for f in files}


def check_out(out: Path, data: Path) -> None:
    """Refuse, before any work, an --out that exists (nothing is ever overwritten) or lies in the data folder."""
    for folder in (out, out.parent / f"{out.name}-review"):
        if folder.exists() or folder.is_symlink():
            raise CatdogError(f"--out {folder} already exists; it must name a new folder")
    check_folder_target(out, "--out")  # not below a file, somewhere it can be made
    if out.resolve().is_relative_to(data.resolve()):
        raise CatdogError(f"--out {out} is inside the data folder; catdog check never writes there")


def write_clean_copy(result: CheckResult, files: list[str], out: Path, relabel: bool) -> dict[str, int]:
    """Copy the dataset into `out` (a folder that must not exist yet) as decided; counts per decision."""
    root = Path(result["data"])
    check_out(out, root)
    decided = decisions(result, files, relabel)
    out.mkdir(parents=True)
    counts: dict[str, int] = {}
    rows = [("path", "decision", "why", "copied_to")]
    for path, (decision, why, to) in decided.items():
        counts[decision] = counts.get(decision, 0) + 1
        to = to.replace(REVIEW_BESIDE, f"{out.name}-review")
        rows.append((path, decision, why, to))
        if to:
            (out / to).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / path, out / to)
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    atomic_write_text(out / "decisions.csv", buffer.getvalue())
    return counts
