"""What `catdog check` finds in a dataset, as records (torch-free): the CLI, the HTML report and --json read them.

Every finding has a level: "error" (the data lies about accuracy or cannot be read: a leak across splits, an
unreadable file), "warning" (worth a look before training: a duplicate within a split, a likely label error,
a placeholder), or "info" (harmless facts: EXIF rotation, grayscale). `--fail-on LEVEL` exits 1 when a finding
is at LEVEL or worse.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

LEVELS = ("error", "warning", "info")  # worst first
FAIL_ON = (*LEVELS, "never")


def at_or_above(level: str, threshold: str) -> bool:
    """Whether a finding of `level` fails a check run with `--fail-on threshold`."""
    return threshold != "never" and LEVELS.index(level) <= LEVELS.index(threshold)


class FileRef(TypedDict):
    path: str  # relative to the dataset's folder
    split: str  # train, val, test, all (a folder without split folders) or unlabeled
    label: str | None  # the class folder it is in; None when unlabeled


class DuplicatePair(TypedDict):
    """Two files that show the same picture. A pair across splits is a leak: val accuracy counts a training image."""

    kind: str  # "exact" (the same bytes) or "near" (the same picture resized, re-encoded, cropped, recolored)
    leak: bool  # the two are in different splits
    conflict: bool  # the two carry different labels
    level: str
    a: FileRef
    b: FileRef
    similarity: float | None  # cosine similarity of their backbone features (1 for the same picture)
    distance: int | None  # Hamming distance of their perceptual hashes (0 of 64 bits: the same)


class LabelSuspect(TypedDict):
    """An image whose given label the other images disagree with (out-of-fold, by confident learning)."""

    path: str
    split: str
    given: str
    suspected: str
    probability: float  # out-of-fold probability of the suspected label
    given_probability: float  # out-of-fold probability of the given label: the lower, the likelier an error
    confident: bool  # confident learning flags it (a warning); else the probe only out-votes the label (info)
    level: str


class ImageProblem(TypedDict):
    """A file that should not be trained on as it is: unreadable, a placeholder, degenerate, lying about its format."""

    path: str
    split: str
    label: str | None
    kind: str  # unreadable, placeholder, constant, tiny, aspect, extension, animated
    detail: str
    level: str


class LabelCheck(TypedDict):
    """How the label check ran, or why it did not."""

    ran: bool
    why_not: NotRequired[str]
    images: int
    folds: int
    backbone: str
    oof_accuracy: NotRequired[float]  # out-of-fold accuracy of the linear probe: how much its opinion is worth


class CheckResult(TypedDict):
    """`catdog check --json`."""

    kind: str  # "check"
    data: str  # the dataset's folder
    classes: list[str]
    images: int  # files looked at
    counts: dict[str, dict[str, int]]  # split -> class -> images
    imbalance: dict[str, float]  # split -> largest class / smallest class
    missing: dict[str, list[str]]  # split -> classes it has no image of
    duplicates: list[DuplicatePair]  # leaks first, exact before near
    labels: list[LabelSuspect]  # likeliest error first
    label_check: LabelCheck
    problems: list[ImageProblem]  # errors first
    facts: dict[str, int]  # harmless counts: EXIF-rotated, grayscale, CMYK, with alpha, by format
    findings: dict[str, int]  # level -> number of findings
    notes: list[str]
    seconds: dict[str, float]  # where the time went: decode, features, duplicates, labels, total
    report: NotRequired[str]
    cleaned: NotRequired[dict]  # --out: {"out": folder, "decisions": {kept|dropped|review|relabeled: count}}


CSV_COLUMNS = ("level", "finding", "path", "split", "label", "other_path", "other_split", "detail")


def finding_rows(result: CheckResult) -> list[tuple[str, ...]]:
    """Every finding as one flat row (`--csv`), in the order the record lists them: pairs, labels, files, balance."""
    rows: list[tuple[str, ...]] = []
    for d in result["duplicates"]:
        how = "same bytes" if d["kind"] == "exact" else f"cosine {d['similarity']}, hash distance {d['distance']}"
        what = f"{'leak' if d['leak'] else 'duplicate'} ({d['kind']})"
        a, b = d["a"], d["b"]
        detail = how + ("; different labels" if d["conflict"] else "")
        rows.append((d["level"], what, a["path"], a["split"], a["label"] or "", b["path"], b["split"], detail))
    for s in result["labels"]:
        detail = f"looks like {s['suspected']} ({s['probability']:.0%})"
        rows.append((s["level"], "label", s["path"], s["split"], s["given"], "", "", detail))
    for p in result["problems"]:
        rows.append((p["level"], p["kind"], p["path"], p["split"], p["label"] or "", "", "", p["detail"]))
    for split, classes in result["missing"].items():
        rows += [("warning", "missing class", "", split, c, "", "", f"{split} has no image of {c}") for c in classes]
    return rows
