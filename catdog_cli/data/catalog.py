"""The datasets catdog can fetch by name, what a fetch request says, and what a fetched dataset records.

Shared by fetch.py (download, lock, publish) and layout.py (rebuild a source as the standard layout).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

MARKER = ".catdog-dataset.json"


MARKER_MAX_BYTES = 256 << 20  # a marker lists skipped files; more than this is not one catdog wrote


VAL_FRACTION = 0.2  # of each class, when the source has no val split (the same files give the same val set)


ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip")


SPLIT_ORDER = ("train", "val", "test", "unlabeled")


KAGGLE_NAME = re.compile(r"([A-Za-z]+)\.\d+\.\w+")  # cat.123.jpg: the label is in the file name


MAX_NESTING = 2  # archives inside archives inside the archive (Kaggle's competition zip needs 1)


@dataclass(frozen=True)
class Source:
    """A registry entry: where a dataset's archive lives, what it must be, and how to name its classes."""

    url: str
    size: int | None  # bytes
    sha256: str | None  # None where it could not be established: size and layout are checked instead
    classes: dict[str, str] = field(default_factory=dict)  # source folder name -> catdog class name
    decode: bool = False  # decode every image: for sources known to hold truncated files


REGISTRY: dict[str, Source] = {
    "hymenoptera": Source(
        url="https://download.pytorch.org/tutorial/hymenoptera_data.zip",
        size=47_286_322,
        # The checksum pytorch/tutorials verifies this archive against (.jenkins/download_data.py).
        sha256="fbc41b31d544714d18dd1230b1e2b455e1557766e13e67f9f5a7a23af7c02209",
    ),
    "catdog": Source(  # Google's 3,000-image cut of Kaggle Dogs vs. Cats: train/ and validation/
        url="https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip",
        size=68_606_236,  # Content-Length the server reports; the sha256 could not be established offline
        sha256=None,
        classes={"cats": "cat", "dogs": "dog"},
    ),
    "petimages": Source(  # Microsoft's full Kaggle Cats and Dogs set (PetImages/{Cat,Dog}), 787 MB
        url="https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
        "kagglecatsanddogs_5340.zip",
        size=824_887_076,  # Content-Length the server reports; the sha256 could not be established offline
        sha256=None,
        classes={"Cat": "cat", "Dog": "dog"},
        decode=True,  # it holds zero-byte and truncated JPEGs
    ),
}


@dataclass
class DatasetSummary:
    """What a fetch produced; also stored as the dataset's completion marker."""

    name: str
    path: Path
    classes: list[str]
    splits: dict[str, int]  # images per split: {"train": 320, "val": 78, "unlabeled": 300}
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file in the source, reason)
    cached: bool = False  # already complete: nothing was done
    source: str = ""
    sha256: str | None = None  # of the archive it came from

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "classes": self.classes,
            "splits": self.splits,
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
            "cached": self.cached,
            "source": self.source,
            "sha256": self.sha256,
        }

    @classmethod
    def from_json(cls, d: dict) -> DatasetSummary:
        """Raises ValueError unless d has every field with its type: a marker is trusted only when whole."""
        try:
            summary = cls(
                name=d["name"],
                path=Path(d["path"]),
                classes=list(d["classes"]),
                splits=dict(d["splits"]),
                skipped=[(s["file"], s["reason"]) for s in d["skipped"]],
                cached=d["cached"],
                source=d["source"],
                sha256=d["sha256"],
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a dataset summary ({e})") from None
        texts = [summary.name, summary.source, *summary.classes, *summary.splits, *sum(summary.skipped, ())]
        if not (
            all(isinstance(t, str) for t in texts)
            and isinstance(summary.cached, bool)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in summary.splits.values())
            and (summary.sha256 is None or isinstance(summary.sha256, str))
        ):
            raise ValueError("not a dataset summary (a field has the wrong type)")
        return summary


@dataclass(frozen=True)
class Request:
    name: str
    root: Path
    source: str | None  # as the user gave it
    sha256: str | None
    max_bytes: int | None

    @property
    def final(self) -> Path:
        return self.root / self.name
