"""archives: unpacking archives nobody vouches for (damaged, bombs, clashing paths), and the download's caps."""

from __future__ import annotations

import io
import random
import struct
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

from catdog_cli.data import archives
from catdog_cli.data.archives import ENTRY_COST, MAX_RATIO, Budget, extract
from catdog_cli.errors import CatdogError

MIB = 1 << 20


def _zip(entries: list[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip with these entries in this order; a name may come twice (zipfile only warns)."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", compression) as zf:
        warnings.simplefilter("ignore")  # "Duplicate name": exactly what some tests want
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def _tar(entries: list[tuple[str, bytes]], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _files(folder: Path) -> dict[str, bytes]:
    return (
        {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        if folder.exists()
        else {}
    )


def _unpack(tmp_path: Path, data: bytes, name: str = "a.zip", max_bytes: int | None = None) -> Path:
    archive = tmp_path / name
    archive.write_bytes(data)
    extract(archive, tmp_path / "out", Budget(len(data), max_bytes))
    return tmp_path / "out"


# --- damaged archives: a one-line error, whatever the damage -------------------------------------------


def _sample_entries(rng: random.Random) -> list[tuple[str, bytes]]:
    return [(f"d{k % 2}/{k}.jpg", rng.randbytes(rng.randint(0, 3000))) for k in range(rng.randint(1, 6))]


@pytest.mark.parametrize("kind", ["zip", "stored-zip", "tar.gz", "tar.bz2", "tar.xz", "tar"])
def test_damaged_archives_fail_with_one_line_and_write_nothing_outside(tmp_path, kind):
    """Seeded corruption (bytes overwritten, truncated): extraction succeeds or raises CatdogError, never
    anything else, and never writes outside its folder."""
    rng = random.Random(kind)
    for case in range(150 if kind.endswith("zip") else 50):
        entries = _sample_entries(rng)
        if kind.endswith("zip"):
            data = _zip(entries, zipfile.ZIP_STORED if kind == "stored-zip" else zipfile.ZIP_DEFLATED)
        else:
            data = _tar(entries, "w:" + kind.removeprefix("tar").removeprefix(".") if kind != "tar" else "w")
        data = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        folder = tmp_path / str(case)
        folder.mkdir()
        try:
            _unpack(folder, bytes(data), f"x.{kind}", max_bytes=64 * MIB)
        except CatdogError as e:
            assert "\n" not in str(e)
        assert sorted(p.name for p in folder.iterdir()) in (["out", f"x.{kind}"], [f"x.{kind}"])


def test_encrypted_and_bzip2_zip_entries_are_refused(tmp_path):
    data = bytearray(_zip([("a.jpg", b"x" * 100)]))
    for offset in (6, data.rindex(b"PK\x01\x02") + 8):  # general-purpose flags, local and central: bit 0 = encrypted
        data[offset] |= 1
    with pytest.raises(CatdogError, match=r"'a\.jpg' is encrypted"):
        _unpack(tmp_path, bytes(data))
    # zipfile decompresses a bzip2 entry with no bound on memory: 100 bytes can stand for gigabytes
    with pytest.raises(CatdogError, match="compression method 12"):
        _unpack(tmp_path, _zip([("a.jpg", b"x" * 100)], zipfile.ZIP_BZIP2))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (_zip([]), "empty.zip"),
        (_zip([("train/", b""), ("train/cat/", b"")]), "folders.zip"),
        (_tar([]), "empty.tar.gz"),
        (b"\0" * 10240, "zeros.tar"),  # what a server sends as "the file" more often than one would think
    ],
    ids=["empty.zip", "folders.zip", "empty.tar.gz", "zeros.tar"],  # not the bytes: a gzip header holds the time
)
def test_an_archive_without_files_is_empty_not_a_crash(tmp_path, data, name):
    with pytest.raises(CatdogError, match="is empty"):
        _unpack(tmp_path, data, name)


def test_not_an_archive(tmp_path):
    with pytest.raises(CatdogError, match="not a zip or tar"):
        _unpack(tmp_path, b"", "nothing.zip")


# --- bombs: charged before anything is written ----------------------------------------------------------


def _declared(data: bytes, size: int) -> bytes:
    """The zip with its (one) entry's uncompressed size changed in both headers: a claim, not the bytes."""
    data = bytearray(data)
    data[22:26] = struct.pack("<I", size)  # local header
    central = data.rindex(b"PK\x01\x02")
    data[central + 24 : central + 28] = struct.pack("<I", size)
    return bytes(data)


@pytest.mark.parametrize("seed", range(8))
def test_an_archive_that_unpacks_to_more_than_its_budget_writes_nothing(tmp_path, seed):
    """Zeros compress 1000:1: generated bombs of one or many entries, zip or tar, are refused up front."""
    rng = random.Random(seed)
    n, size = rng.randint(1, 5), rng.choice([MIB, 3 * MIB])
    entries = [(f"bomb/{k}.jpg", b"\0" * size) for k in range(n)]
    data = _zip(entries) if seed % 2 else _tar(entries, rng.choice(["w:gz", "w:bz2", "w:xz"]))
    assert n * size > MAX_RATIO * len(data)
    with pytest.raises(CatdogError, match=r"unpacks to more than 100 times the archive's size.*--max-size"):
        _unpack(tmp_path, data, "bomb.zip" if seed % 2 else "bomb.tar")
    assert _files(tmp_path / "out") == {}
    # the user who trusts it says how much it may take, and it is unpacked
    out = _unpack(tmp_path, data, "bomb.zip" if seed % 2 else "bomb.tar", max_bytes=n * (size + ENTRY_COST))
    assert sum(map(len, _files(out).values())) == n * size


def test_a_two_mb_zip_claiming_two_gib_is_refused_before_a_byte_is_written(tmp_path):
    small = _zip([("a.jpg", bytes(range(256)) * 8192)], zipfile.ZIP_STORED)  # 2 MB, incompressible enough
    with pytest.raises(CatdogError, match="unpacks to more than"):
        _unpack(tmp_path, _declared(small, 2 << 30), max_bytes=1 << 30)
    assert _files(tmp_path / "out") == {}


def test_an_entry_holding_more_than_it_declares_is_cut_at_its_declared_size(tmp_path):
    data = _declared(_zip([("a.jpg", b"\0" * MIB)]), 10)  # says 10 bytes, inflates to 1 MiB
    with pytest.raises(CatdogError, match="damaged"):
        _unpack(tmp_path, data, max_bytes=10 * MIB)
    assert all(len(b) <= 10 for b in _files(tmp_path / "out").values())


def test_many_empty_entries_cost_their_blocks(tmp_path):
    """A file takes a block on disk: 5,000 empty files in a small archive are a bomb too."""
    data = _tar([(f"{k}.jpg", b"") for k in range(5000)])
    assert MAX_RATIO * len(data) < 5000 * ENTRY_COST
    with pytest.raises(CatdogError, match="unpacks to more than"):
        _unpack(tmp_path, data, "many.tar.gz")


def test_the_budget_is_shared_by_the_archives_inside_an_archive(tmp_path):
    budget = Budget(0, max_bytes=3 * (MIB + ENTRY_COST))
    for k in range(2):
        archive = tmp_path / f"{k}.zip"
        archive.write_bytes(_zip([(f"{k}/a.jpg", b"\0" * MIB)]))
        extract(archive, tmp_path / "out", budget)
    archive.write_bytes(_zip([("2/a.jpg", b"\0" * MIB), ("2/b.jpg", b"\0" * MIB)]))
    with pytest.raises(CatdogError, match="the --max-size of"):
        extract(archive, tmp_path / "out", budget)
    assert sorted(_files(tmp_path / "out")) == ["0/a.jpg", "1/a.jpg"]


def test_copy_stops_at_the_declared_size():
    dst = io.BytesIO()
    with pytest.raises(CatdogError, match="more bytes than it declares"):
        archives._copy(io.BytesIO(b"x" * 100), dst, 10, "a.zip")
    assert len(dst.getvalue()) <= 10


# --- clashes: no entry ever replaces another ------------------------------------------------------------

CLASHING = {
    "the same path twice": [("a/1.jpg", b"one"), ("a/1.jpg", b"two")],
    "the same path spelled twice": [("a/1.jpg", b"one"), ("a/./1.jpg", b"two")],
    "a backslash path": [("a/1.jpg", b"one"), ("a\\1.jpg", b"two")],
    "a file, then a folder of that name": [("a/x", b"one"), ("a/x/1.jpg", b"two")],
    "a folder, then a file of that name": [("a/x/1.jpg", b"one"), ("a/x", b"two")],
    "a folder entry, then a file of that name": [("a/x/", b""), ("a/x", b"two")],
}


@pytest.mark.parametrize("entries", CLASHING.values(), ids=CLASHING)
@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_entries_that_would_replace_each_other_are_refused_with_a_count(tmp_path, entries, kind):
    data = _zip(entries) if kind == "zip" else _tar(entries)
    with pytest.raises(CatdogError, match=r"refusing a\.\S+: 1 of its entries would overwrite"):
        _unpack(tmp_path, data, f"a.{kind}")
    assert _files(tmp_path / "out") == {}


@pytest.mark.parametrize("seed", range(30))
def test_random_entry_lists_are_unpacked_whole_or_refused(tmp_path, seed):
    """Entries drawn from a small set of names (so they collide): every file lands with its own bytes, or
    nothing is written at all."""
    rng = random.Random(seed)
    names = ["a", "a/b", "a/b/c.jpg", "a/c.jpg", "b.jpg", "a/./b", "a//c.jpg"] + ["c/"] * (seed % 2)  # zip: a folder
    entries = [(rng.choice(names), rng.randbytes(8)) for _ in range(rng.randint(1, 5))]
    data = _zip(entries) if seed % 2 else _tar(entries)
    try:
        out = _unpack(tmp_path, data, "r.zip" if seed % 2 else "r.tar.gz")
    except CatdogError:
        assert _files(tmp_path / "out") == {}, entries
        return
    files = [(n, d) for n, d in entries if not n.endswith("/")]
    assert _files(out) == {n.replace("//", "/").replace("/./", "/"): d for n, d in files}, entries
    assert len(_files(out)) == len(files), entries  # no file was lost to another of the same path


def test_an_archive_unpacked_into_another_ones_tree_never_replaces_its_files(tmp_path):
    budget = Budget(0, max_bytes=MIB)
    first, second = tmp_path / "train.zip", tmp_path / "more.zip"
    first.write_bytes(_zip([("train/cat.1.jpg", b"first"), ("train/cat.2.jpg", b"first")]))
    second.write_bytes(
        _zip([("train/cat.1.jpg", b"second"), ("train/cat.2.jpg", b"second"), ("train/cat.3.jpg", b"second")])
    )
    extract(first, tmp_path / "out", budget)
    with pytest.raises(
        CatdogError,
        match=r"refusing more\.zip: 2 of its entries would overwrite .*'train/cat\.1\.jpg'"
        r", already unpacked from another archive",
    ):
        extract(second, tmp_path / "out", budget)
    assert _files(tmp_path / "out") == {"train/cat.1.jpg": b"first", "train/cat.2.jpg": b"first"}


@pytest.mark.parametrize("name", ["a/" * 1500 + "x.jpg", "a/" * 65 + "x.jpg", "x" * 5000 + ".jpg"])
def test_an_entry_deeper_or_longer_than_a_file_system_takes_is_refused(tmp_path, name):
    with pytest.raises(CatdogError, match="folders deep or"):
        _unpack(tmp_path, _zip([(name, b"x")]))
    assert not (tmp_path / "out").exists()
