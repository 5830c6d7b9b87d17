"""`catdog fetch`, offline: archives built here and served from a loopback HTTP server on 127.0.0.1."""

from __future__ import annotations

import builtins
import errno
import functools
import hashlib
import io
import itertools
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import tarfile
import threading
import types
import zipfile
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import catdog, error_line, linked_tree
from PIL import Image

from catdog_cli.data import download, fetch, layout
from catdog_cli.data.archives import FetchProgress
from catdog_cli.data.catalog import MARKER, REGISTRY, DatasetSummary
from catdog_cli.errors import CatdogError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


# --- tiny archives ------------------------------------------------------------------------------------


@functools.cache
def _jpeg(shade: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (shade % 256, 80, 160)).save(buf, "JPEG")
    return buf.getvalue()


@functools.cache
def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (16, 16)).save(buf, "GIF")
    return buf.getvalue()


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _deflated(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar(entries: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None) -> bytes:
    """A tar.gz; links maps an entry name to (tarfile.SYMTYPE or LNKTYPE, link target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tf.addfile(info)
    return buf.getvalue()


def _hymenoptera() -> dict[str, bytes]:
    """The tutorial's layout, GIF placeholder included: 12 train + 6 val images."""
    e = {
        f"hymenoptera_data/{s}/{c}/{i}.jpg": _jpeg(i)
        for s, n in (("train", 6), ("val", 3))
        for c in ("ants", "bees")
        for i in range(n)
    }
    e["hymenoptera_data/train/ants/imageNotFound.gif"] = _gif()
    return e


def _kaggle(n: int = 10, unlabeled: int = 4) -> dict[str, bytes]:
    e = {f"train/{c}.{i}.jpg": _jpeg(i) for c in ("cat", "dog") for i in range(n)}
    e |= {f"test1/{i}.jpg": _jpeg(i) for i in range(1, unlabeled + 1)}
    return e


def _tree(root: Path) -> dict[str, int]:
    """Files per folder under root, as {'train/ants': 7, ...}, hidden files left out."""
    counts: dict[str, int] = {}
    for p in root.rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            key = p.parent.relative_to(root).as_posix()
            counts[key] = counts.get(key, 0) + 1
    return counts


def _leftovers(root: Path) -> list[str]:
    """Temporary folders, partial downloads and lock files a fetch must not leave behind."""
    return sorted(p.name for p in root.rglob("*") if p.name.endswith((".tmp", ".part", ".download", ".lock")))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- loopback server ------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Serves server.files; honours `Range: bytes=N-` unless told not to; can cut a response mid-way, leave
    out Content-Length (or send a wrong one), or stream server.streams[path] zero bytes with no length."""

    def do_GET(self):
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range")))
        if self.path in srv.streams:
            self._stream(srv.streams[self.path])
            return
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and self.path not in srv.no_range:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        if self.path not in srv.no_length:
            self.send_header("Content-Length", srv.lengths.get(self.path, str(len(body))))
        self.end_headers()
        if srv.cuts.get(self.path, 0) > 0:  # send a third, then hang up
            srv.cuts[self.path] -= 1
            body = body[: len(body) // 3]
        self.wfile.write(body)
        srv.sent += len(body)

    def _stream(self, n: int) -> None:
        self.send_response(200)
        self.end_headers()  # no Content-Length: the body ends when the connection closes (HTTP/1.0)
        try:
            for _ in range(n // 65536):
                self.wfile.write(bytes(65536))
                self.server.sent += 65536
        except OSError:  # the client hung up: what a capped download does
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def fetch_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.log, srv.cuts, srv.no_range, srv.sent = {}, [], {}, set(), 0
    srv.streams, srv.no_length, srv.lengths = {}, set(), {}
    srv.url = lambda path: f"http://127.0.0.1:{srv.server_address[1]}{path}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def fetch_offline(monkeypatch, tmp_path):
    """No sleeping between retries, and nothing written to the user's real data folder."""
    monkeypatch.setattr(download, "BACKOFF_S", 0.0)
    monkeypatch.setattr(download, "TIMEOUT_S", 5.0)
    monkeypatch.setenv("CATDOG_HOME", str(tmp_path / "home"))


# --- layouts --------------------------------------------------------------------------------------------


def test_url_fetch_builds_standard_layout(fetch_server, tmp_path):
    fetch_server.files["/hymenoptera_data.zip"] = _zip(_hymenoptera())
    s = fetch.fetch("hymenoptera", root=tmp_path, source=fetch_server.url("/hymenoptera_data.zip"))
    assert s.path == tmp_path / "hymenoptera"
    assert _tree(s.path) == {"train/ants": 7, "train/bees": 6, "val/ants": 3, "val/bees": 3}
    assert (s.path / "train/ants/imageNotFound.gif").is_file()  # kept: the engine's loader decides
    assert s.classes == ["ants", "bees"] and s.splits == {"train": 13, "val": 6}
    assert s.skipped == [] and not s.cached
    assert s.sha256 == _sha(fetch_server.files["/hymenoptera_data.zip"])
    assert (s.path / MARKER).is_file()
    assert _leftovers(tmp_path) == []


def test_default_data_root_and_registry_checksum(fetch_server, tmp_path, monkeypatch):
    data = _zip(_hymenoptera())
    fetch_server.files["/h.zip"] = data
    entry = REGISTRY["hymenoptera"]
    monkeypatch.setitem(
        REGISTRY, "hymenoptera", entry.__class__(url=fetch_server.url("/h.zip"), size=len(data), sha256=_sha(data))
    )
    s = fetch.fetch("hymenoptera")
    assert s.path == tmp_path / "home" / "hymenoptera" and s.splits["train"] == 13


def test_registry_size_mismatch_refused(fetch_server, tmp_path, monkeypatch):
    data = _zip(_hymenoptera())
    fetch_server.files["/h.zip"] = data
    monkeypatch.setitem(
        REGISTRY,
        "hymenoptera",
        REGISTRY["hymenoptera"].__class__(url=fetch_server.url("/h.zip"), size=len(data) + 1, sha256=None),
    )
    with pytest.raises(CatdogError, match="size mismatch"):
        fetch.fetch("hymenoptera", root=tmp_path)
    assert not (tmp_path / "hymenoptera").exists() and _leftovers(tmp_path) == []


def test_google_filtered_layout_renames_classes(fetch_server, tmp_path):
    e = {
        f"cats_and_dogs_filtered/{s}/{c}s/{c}.{i}.jpg": _jpeg(i)
        for s, n in (("train", 5), ("validation", 2))
        for c in ("cat", "dog")
        for i in range(n)
    }
    e["cats_and_dogs_filtered/vectorize.py"] = b"print()"
    fetch_server.files["/cats_and_dogs_filtered.zip"] = _zip(e)
    s = fetch.fetch("catdog", root=tmp_path, source=fetch_server.url("/cats_and_dogs_filtered.zip"))
    assert _tree(s.path) == {"train/cat": 5, "train/dog": 5, "val/cat": 2, "val/dog": 2}
    assert s.skipped == []  # the stray script beside the split folders is not reported


def test_kaggle_layout_split_is_stratified_and_deterministic(tmp_path):
    archive = tmp_path / "kaggle.zip"
    archive.write_bytes(_zip(_kaggle(n=10, unlabeled=4)))
    a = fetch.fetch("catdog", root=tmp_path / "a", source=str(archive))
    b = fetch.fetch("catdog", root=tmp_path / "b", source=str(archive))
    assert _tree(a.path) == {"train/cat": 8, "train/dog": 8, "val/cat": 2, "val/dog": 2, "unlabeled": 4}
    assert a.splits == {"train": 16, "val": 4, "unlabeled": 4} and a.classes == ["cat", "dog"]
    assert sorted(os.listdir(a.path / "val/cat")) == sorted(os.listdir(b.path / "val/cat"))
    assert archive.is_file()  # the user's archive is left alone


def test_kaggle_competition_zip_with_inner_zips(tmp_path):
    k = _kaggle(n=5, unlabeled=2)
    outer = {
        "train.zip": _zip({n: d for n, d in k.items() if n.startswith("train/")}),
        "test1.zip": _zip({n: d for n, d in k.items() if n.startswith("test1/")}),
        "sampleSubmission.csv": b"id,label\n",
    }
    archive = tmp_path / "dogs-vs-cats.zip"
    archive.write_bytes(_zip(outer))
    s = fetch.fetch(None, root=tmp_path / "data", source=str(archive))
    assert s.name == "dogs-vs-cats" and s.splits == {"train": 8, "val": 2, "unlabeled": 2}


def test_class_folders_tar_gz_named_after_archive(tmp_path):
    archive = tmp_path / "flowers.tar.gz"
    archive.write_bytes(
        _tar({f"{c}/{i}.png" if c == "rose" else f"{c}/{i}.jpg": _jpeg(i) for c in ("rose", "tulip") for i in range(5)})
    )
    s = fetch.fetch(None, root=tmp_path / "data", source=str(archive))
    assert s.name == "flowers" and s.path == tmp_path / "data" / "flowers"
    assert _tree(s.path) == {"train/rose": 4, "train/tulip": 4, "val/rose": 1, "val/tulip": 1}


def test_labeled_test_split_kept(tmp_path):
    src = tmp_path / "src"
    for split in ("train", "val", "test"):
        for c in ("a", "b"):
            (src / split / c).mkdir(parents=True)
            (src / split / c / "x.jpg").write_bytes(_jpeg())
    s = fetch.fetch("mine", root=tmp_path / "data", source=str(src))
    assert s.splits == {"train": 2, "val": 2, "test": 2}
    assert (src / "train/a/x.jpg").is_file()  # a folder source is copied, never moved


def test_corrupt_and_empty_images_left_out_and_reported(tmp_path):
    e = {f"PetImages/{c}/{i}.jpg": _jpeg(i) for c in ("Cat", "Dog") for i in range(5)}
    e["PetImages/Cat/666.jpg"] = b""
    e["PetImages/Dog/11702.jpg"] = _jpeg(1)[:200]  # truncated: the header opens, the pixels do not
    e["PetImages/Dog/Thumbs.db"] = b"\0" * 64
    e["PetImages/Dog/notes.txt"] = b"not an image"
    e["readme[1].txt"] = b"hello"
    archive = tmp_path / "kagglecatsanddogs_5340.zip"
    archive.write_bytes(_zip(e))
    s = fetch.fetch("petimages", root=tmp_path / "data", source=str(archive))
    assert s.classes == ["cat", "dog"] and s.splits == {"train": 8, "val": 2}
    reasons = dict(s.skipped)
    assert reasons["PetImages/Cat/666.jpg"] == "empty file"
    assert reasons["PetImages/Dog/11702.jpg"].startswith("cannot decode")
    assert "PetImages/Dog/Thumbs.db" not in reasons  # OS litter: ignored by fetch as by training, not reported
    assert reasons["PetImages/Dog/notes.txt"] == "not an image"
    assert len(s.skipped) == 3


def test_unrecognized_layout_refused(tmp_path):
    archive = tmp_path / "pics.zip"
    archive.write_bytes(_zip({"a.jpg": _jpeg(), "b.jpg": _jpeg()}))
    with pytest.raises(CatdogError, match="cannot tell the classes"):
        fetch.fetch(None, root=tmp_path / "data", source=str(archive))
    assert not (tmp_path / "data" / "pics").exists() and _leftovers(tmp_path) == []


# --- download: resume, retries, checksums ---------------------------------------------------------------


def test_cut_download_resumes_with_range(fetch_server, tmp_path):
    data = _zip(_hymenoptera())
    fetch_server.files["/h.zip"] = data
    fetch_server.cuts["/h.zip"] = 1
    s = fetch.fetch("hymenoptera", root=tmp_path, source=fetch_server.url("/h.zip"), sha256=_sha(data))
    assert s.splits == {"train": 13, "val": 6}
    (_, first), (_, second) = fetch_server.log
    assert first is None and second == f"bytes={len(data) // 3}-"
    assert fetch_server.sent == len(data)  # nothing was downloaded twice
    assert _leftovers(tmp_path) == []


def test_interrupted_fetch_leaves_no_dataset_and_rerun_resumes(fetch_server, tmp_path):
    data = _zip(_hymenoptera())
    fetch_server.files["/h.zip"] = data
    fetch_server.cuts["/h.zip"] = 99  # keeps cutting: each try gets a third of what is left
    fetch_server.no_range.add("/h.zip")  # ...and cannot resume, so no try makes progress past the first
    with pytest.raises(CatdogError, match=r"could not download .*rerun to resume"):
        fetch.fetch("hymenoptera", root=tmp_path, source=fetch_server.url("/h.zip"))
    assert not (tmp_path / "hymenoptera").exists()
    parts = list(tmp_path.rglob("*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size == len(data) // 3

    fetch_server.cuts["/h.zip"], fetch_server.no_range = 0, set()  # the network is back
    fetch_server.log.clear()
    s = fetch.fetch("hymenoptera", root=tmp_path, source=fetch_server.url("/h.zip"))
    assert fetch_server.log == [("/h.zip", f"bytes={len(data) // 3}-")]
    assert s.splits == {"train": 13, "val": 6} and _leftovers(tmp_path) == []


def test_server_without_range_support_restarts(fetch_server, tmp_path):
    data = _zip(_hymenoptera())
    fetch_server.files["/h.zip"] = data
    fetch_server.cuts["/h.zip"] = 1
    fetch_server.no_range.add("/h.zip")
    s = fetch.fetch("hymenoptera", root=tmp_path, source=fetch_server.url("/h.zip"), sha256=_sha(data))
    assert s.splits == {"train": 13, "val": 6}
    assert len(fetch_server.log) == 2


def test_complete_part_file_gets_416_and_is_used(fetch_server, tmp_path):
    data = _zip(_hymenoptera())
    fetch_server.files["/h.zip"] = data
    url = fetch_server.url("/h.zip")
    downloads = tmp_path / ".downloads"
    downloads.mkdir()
    (downloads / (fetch._download_name("hymenoptera", url) + ".part")).write_bytes(data)  # killed at 100 %
    s = fetch.fetch("hymenoptera", root=tmp_path, source=url)
    assert fetch_server.sent == 0 and s.splits["val"] == 6


def test_bad_checksum_refused_with_both_hashes_and_nothing_left(fetch_server, tmp_path):
    data = _zip(_hymenoptera())
    fetch_server.files["/h.zip"] = data
    wrong = "0" * 64
    with pytest.raises(CatdogError) as err:
        fetch.fetch("hymenoptera", root=tmp_path, source=fetch_server.url("/h.zip"), sha256=wrong)
    assert wrong in str(err.value) and _sha(data) in str(err.value)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "hymenoptera").exists() and _leftovers(tmp_path) == []


def test_local_archive_checksum_mismatch_keeps_users_file(tmp_path):
    archive = tmp_path / "h.zip"
    archive.write_bytes(_zip(_hymenoptera()))
    with pytest.raises(CatdogError, match="checksum mismatch"):
        fetch.fetch("hymenoptera", root=tmp_path / "data", source=str(archive), sha256="1" * 64)
    assert archive.is_file() and not (tmp_path / "data" / "hymenoptera").exists()


def test_http_404_fails_at_once(fetch_server, tmp_path):
    with pytest.raises(CatdogError, match="HTTP 404"):
        fetch.fetch("x", root=tmp_path, source=fetch_server.url("/missing.zip"))
    assert len(fetch_server.log) == 1 and _leftovers(tmp_path) == []
    assert not (tmp_path / ".downloads").exists()  # a failed online fetch leaves no empty folder either


def test_unreachable_server_gives_up_after_retries(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CatdogError, match=rf"could not download .*{download.RETRIES} tries"):
        fetch.fetch("x", root=tmp_path, source=f"http://127.0.0.1:{port}/x.zip")
    assert not (tmp_path / "x").exists()
    assert not (tmp_path / ".downloads").exists()  # no empty folder left behind


def test_progress_callbacks_see_every_byte(fetch_server, tmp_path):
    data = _zip(_hymenoptera())
    fetch_server.files["/h.zip"] = data
    fetch_server.cuts["/h.zip"] = 1

    class Recorder(FetchProgress):
        def __init__(self):
            self.steps: list[list] = []

        def start(self, total, description):
            self.steps.append([description, total, 0])

        def advance(self, n):
            self.steps[-1][2] += n

    rec = Recorder()
    fetch.fetch("hymenoptera", root=tmp_path, source=fetch_server.url("/h.zip"), progress=rec)
    assert [s[0] for s in rec.steps] == [
        "downloading hymenoptera",
        "downloading hymenoptera",
        "extracting hymenoptera",
        "checking images",
    ]
    assert rec.steps[0] == ["downloading hymenoptera", len(data), len(data) // 3]  # cut off
    assert rec.steps[1] == ["downloading hymenoptera", len(data), len(data)]  # resumed: counts from the offset
    assert all(done == total for _, total, done in rec.steps[1:])


# --- unsafe archives ------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["../evil.jpg", "a/../../evil.jpg", "/tmp/evil.jpg", "C:/evil.jpg", "..\\evil.jpg"])
def test_escaping_zip_entry_refused(fetch_server, tmp_path, entry):
    fetch_server.files["/evil.zip"] = _zip({**_hymenoptera(), entry: _jpeg()})
    root = tmp_path / "data"
    with pytest.raises(CatdogError, match="outside the target folder"):
        fetch.fetch("hymenoptera", root=root, source=fetch_server.url("/evil.zip"))
    assert not (root / "hymenoptera").exists() and _leftovers(tmp_path) == []
    assert not list(tmp_path.rglob("evil.jpg"))


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_tar_link_entry_refused(tmp_path, kind):
    archive = tmp_path / "links.tar.gz"
    archive.write_bytes(_tar({f"a/{i}.jpg": _jpeg() for i in range(3)}, links={"a/link.jpg": (kind, "/etc/passwd")}))
    with pytest.raises(CatdogError, match="is a link"):
        fetch.fetch(None, root=tmp_path / "data", source=str(archive))
    assert not (tmp_path / "data" / "links").exists() and _leftovers(tmp_path) == []


def test_zip_symlink_entry_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a/1.jpg", _jpeg())
        link = zipfile.ZipInfo("a/link.jpg")
        link.external_attr = 0o120777 << 16  # S_IFLNK
        zf.writestr(link, "/etc/passwd")
    archive = tmp_path / "links.zip"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(CatdogError, match="is a link"):
        fetch.fetch(None, root=tmp_path / "data", source=str(archive))


def test_not_an_archive_refused(tmp_path):
    bogus = tmp_path / "page.zip"
    bogus.write_text("<html>not found</html>")
    with pytest.raises(CatdogError, match="not a zip or tar"):
        fetch.fetch(None, root=tmp_path / "data", source=str(bogus))


# --- reruns ---------------------------------------------------------------------------------------------


def test_second_fetch_is_a_noop_and_force_redoes(fetch_server, tmp_path):
    fetch_server.files["/h.zip"] = _zip(_hymenoptera())
    url = fetch_server.url("/h.zip")
    first = fetch.fetch("hymenoptera", root=tmp_path, source=url)
    stamp = (first.path / MARKER).stat().st_mtime_ns
    (first.path / "train/ants/0.jpg").unlink()  # so we can tell whether --force rebuilt it

    again = fetch.fetch("hymenoptera", root=tmp_path, source=url)
    assert again.cached and again.splits == first.splits and len(fetch_server.log) == 1
    assert (first.path / MARKER).stat().st_mtime_ns == stamp
    assert fetch.fetch("hymenoptera", root=tmp_path).cached  # by name alone, too

    forced = fetch.fetch("hymenoptera", root=tmp_path, source=url, force=True)
    assert not forced.cached and len(fetch_server.log) == 2
    assert (forced.path / "train/ants/0.jpg").is_file() and _leftovers(tmp_path) == []


def test_other_source_for_fetched_dataset_needs_force(tmp_path):
    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    a.write_bytes(_zip(_kaggle(n=5)))
    b.write_bytes(_zip(_kaggle(n=6)))
    fetch.fetch("catdog", root=tmp_path / "data", source=str(a))
    with pytest.raises(CatdogError, match="--force"):
        fetch.fetch("catdog", root=tmp_path / "data", source=str(b))
    assert fetch.fetch("catdog", root=tmp_path / "data", source=str(b), force=True).splits["train"] == 10
    redone = fetch.fetch("catdog", root=tmp_path / "data", force=True)  # no --from: the same source again
    assert redone.source == str(b) and not redone.cached


def test_existing_foreign_folder_not_replaced_without_force(tmp_path):
    mine = tmp_path / "data" / "catdog"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    archive = tmp_path / "k.zip"
    archive.write_bytes(_zip(_kaggle(n=5)))
    with pytest.raises(CatdogError, match="not a dataset made by catdog fetch"):
        fetch.fetch("catdog", root=tmp_path / "data", source=str(archive))
    assert (mine / "notes.txt").read_text() == "mine"


def test_stale_temp_folder_from_killed_fetch_is_cleaned(tmp_path):
    stale = tmp_path / "data" / ".catdog.abc123.tmp" / "raw"
    stale.mkdir(parents=True)
    archive = tmp_path / "k.zip"
    archive.write_bytes(_zip(_kaggle(n=5)))
    fetch.fetch("catdog", root=tmp_path / "data", source=str(archive))
    assert _leftovers(tmp_path) == []


# --- arguments, JSON, weights ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kw", "message"),
    [
        ("nosuch", {}, "unknown dataset 'nosuch'"),
        (None, {}, "name a dataset"),
        ("../up", {"source": "x.zip"}, "bad dataset name"),
        ("catdog", {"sha256": "abc"}, "64 hex digits"),
        ("catdog", {"source": "/no/such/file.zip"}, "no such file or folder"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, name, kw, message):
    with pytest.raises(CatdogError, match=re.escape(message)):
        fetch.fetch(name, root=tmp_path, **kw)


def test_summary_json_round_trips(tmp_path):
    archive = tmp_path / "k.zip"
    archive.write_bytes(_zip({**_kaggle(n=5), "train/cat.99.jpg": b""}))
    s = fetch.fetch("catdog", root=tmp_path / "data", source=str(archive))
    d = s.to_json()
    assert d["skipped"] == [{"file": "train/cat.99.jpg", "reason": "empty file"}]
    assert DatasetSummary.from_json(d) == s
    assert fetch.fetch("catdog", root=tmp_path / "data").to_json() == {**d, "cached": True}


def test_fetch_weights_uses_backbones(monkeypatch, tmp_path):
    fake = types.ModuleType("catdog_cli.models.backbones")
    fake.prefetch_weights = lambda name: tmp_path / f"{name}.pth"
    monkeypatch.setitem(sys.modules, "catdog_cli.models.backbones", fake)
    from catdog_cli.cli.fetch import fetch_weights

    assert fetch_weights(["resnet18", "mobilenet_v3_small"]) == {
        "resnet18": tmp_path / "resnet18.pth",
        "mobilenet_v3_small": tmp_path / "mobilenet_v3_small.pth",
    }


def test_custom_dataset_found_by_name_and_forced_from_its_source(tmp_path):
    archive = tmp_path / "pets.zip"
    archive.write_bytes(_zip(_kaggle(n=5)))
    first = fetch.fetch(None, root=tmp_path / "data", source=str(archive))
    assert fetch.fetch("pets", root=tmp_path / "data").cached
    again = fetch.fetch("pets", root=tmp_path / "data", force=True)
    assert not again.cached and again.splits == first.splits and again.source == str(archive)


def test_engine_finds_fetched_dataset_by_name(tmp_path):
    from catdog_cli.data.dataset import load_dataset

    archive = tmp_path / "k.zip"
    archive.write_bytes(_zip(_kaggle(n=10, unlabeled=3)))
    fetch.fetch("catdog", source=str(archive))  # into $CATDOG_HOME, as a user would
    ds = load_dataset("catdog")
    assert ds.classes == ["cat", "dog"] and ds.origin == "folders"
    assert len(ds.split("train")) == 16 and len(ds.split("val")) == 4


# --- the CLI --------------------------------------------------------------------------------------------


def _cli(*args: str):
    from typer.testing import CliRunner

    from catdog_cli.cli.app import app

    return CliRunner().invoke(app, ["fetch", *args])


def test_cli_json_and_table(fetch_server, tmp_path, monkeypatch):
    fetch_server.files["/hymenoptera_data.zip"] = _zip(_hymenoptera())
    url = fetch_server.url("/hymenoptera_data.zip")
    from catdog_cli.cli import fetch as fetch_command

    monkeypatch.setattr(fetch_command, "fetch_weights", lambda names: {n: tmp_path / f"{n}.pth" for n in names})
    r = _cli(
        "hymenoptera", "--from", url, "--root", str(tmp_path), "--weights", "resnet18,mobilenet_v3_small", "--json"
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["datasets"][0]["splits"] == {"train": 13, "val": 6}
    assert out["weights"] == {
        "resnet18": str(tmp_path / "resnet18.pth"),
        "mobilenet_v3_small": str(tmp_path / "mobilenet_v3_small.pth"),
    }
    r = _cli("hymenoptera", "--root", str(tmp_path))
    assert r.exit_code == 0 and "ants, bees" in r.stdout and "already complete" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "nothing to fetch"),
        (("nosuch",), "unknown dataset"),
        (("catdog", "hymenoptera", "--from", "x.zip"), "one dataset at a time"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, args, message):
    r = _cli(*args, "--root", str(tmp_path))
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


# --- the real archives in ../shared, when present -------------------------------------------------------


def _serve_shared(srv, name: str) -> str:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    srv.files[f"/{name}"] = path.read_bytes()
    return srv.url(f"/{name}")


def test_real_hymenoptera_through_loopback(fetch_server, tmp_path):
    url = _serve_shared(fetch_server, "hymenoptera_data.zip")
    s = fetch.fetch(
        "hymenoptera",
        root=tmp_path,
        source=url,
        sha256="77a1531d2237f648377f1f5679db8436247ec91d158ba3d836ffc3a3da5c1034",
    )  # SOURCES.md
    tree = _tree(s.path)
    assert sum(tree.values()) == 398 and set(tree) == {"train/ants", "train/bees", "val/ants", "val/bees"}
    assert (s.path / "train/ants/imageNotFound.gif").is_file()
    assert s.splits == {"train": 245, "val": 153} and s.classes == ["ants", "bees"]


def test_real_catdog_through_loopback(fetch_server, tmp_path):
    url = _serve_shared(fetch_server, "catdog.zip")
    s = fetch.fetch(
        "catdog", root=tmp_path, source=url, sha256="6eed6ea059791b81d0dae7e03995e4f8e9abaff45d64617fe24f0400413c4c4d"
    )  # SOURCES.md
    assert s.splits["train"] + s.splits["val"] == 2002 and s.splits["unlabeled"] == 300
    assert _tree(s.path) == {"train/cat": 801, "train/dog": 801, "val/cat": 200, "val/dog": 200, "unlabeled": 300}
    assert s.skipped == []


# --- one fetch of a dataset at a time -----------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]

# A fetch that stops, lock held and temp folder made, once it starts extracting, until told to go on.
HOLDING_FETCH = """
import sys
from catdog_cli.data import fetch

class Hold(fetch.FetchProgress):
    held = False

    def start(self, total, description):
        if not self.held:
            self.held = True
            print("holding", flush=True)
            sys.stdin.readline()

fetch.fetch(sys.argv[1], root=sys.argv[2], source=sys.argv[3], progress=Hold())
"""


def _spawn(*args: str, stdin: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "1000"}
    return subprocess.Popen(
        [sys.executable, *args],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _next_line(stream, timeout: float = 120.0) -> str:
    """The next line a child process writes; '' if it closed the stream or said nothing for `timeout` s."""
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        return stream.readline().strip() if sel.select(timeout) else ""


def _stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate()


@pytest.mark.skipif(fetch.fcntl is None, reason="no flock on this system")
def test_a_second_fetch_of_a_dataset_waits_for_the_first_and_never_touches_its_files(tmp_path, monkeypatch):
    archive = tmp_path / "k.zip"
    archive.write_bytes(_zip(_kaggle(n=10, unlabeled=4)))
    root = tmp_path / "data"
    first = _spawn("-c", HOLDING_FETCH, "catdog", str(root), str(archive), stdin=True)
    second = None
    try:
        assert _next_line(first.stdout) == "holding", first.stderr.read()
        (temp,) = root.glob(".catdog.*.tmp")
        # told not to wait, a second fetch refuses at once, and leaves the first one's temp folder alone
        monkeypatch.setattr(fetch, "LOCK_WAIT_S", 0.0)
        with pytest.raises(CatdogError, match=f"another catdog fetch of catdog \\(pid {first.pid}\\) is still"):
            fetch.fetch("catdog", root=root, source=str(archive))
        assert temp.is_dir()
        # a second process waits, saying so on stderr
        second = _spawn("-m", "catdog_cli", "fetch", "catdog", "--from", str(archive), "--root", str(root), "--json")
        assert _next_line(second.stderr) == f"waiting for another catdog fetch of catdog (pid {first.pid}) to finish"
        assert temp.is_dir() and not (root / "catdog").exists()
        first.stdin.write("go\n")
        first.stdin.flush()
        out, err = second.communicate(timeout=120)
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        _stop(first, *([second] if second else []))
    assert second.returncode == 0, err
    (dataset,) = json.loads(out)["datasets"]
    assert dataset["cached"] and dataset["splits"] == {"train": 16, "val": 4, "unlabeled": 4}
    assert _tree(root / "catdog") == {"train/cat": 8, "train/dog": 8, "val/cat": 2, "val/dog": 2, "unlabeled": 4}
    assert _leftovers(tmp_path) == []


def test_fetches_started_together_build_the_dataset_once(tmp_path):
    archive = tmp_path / "k.zip"
    archive.write_bytes(_zip(_kaggle(n=10, unlabeled=4)))
    root = tmp_path / "data"
    procs = [
        _spawn("-m", "catdog_cli", "fetch", "catdog", "--from", str(archive), "--root", str(root), "--json")
        for _ in range(3)
    ]
    try:
        results = [p.communicate(timeout=180) for p in procs]
    finally:
        _stop(*procs)
    assert [p.returncode for p in procs] == [0, 0, 0], results
    cached = sorted(json.loads(out)["datasets"][0]["cached"] for out, _ in results)
    assert cached == [False, True, True]
    assert _tree(root / "catdog") == {"train/cat": 8, "train/dog": 8, "val/cat": 2, "val/dog": 2, "unlabeled": 4}
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(fetch.fcntl is None, reason="no flock on this system")
def test_a_file_system_without_locks_fetches_and_says_so(tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fetch.fcntl, "flock", no_locks)
    notes = []
    progress = FetchProgress()
    progress.note = notes.append
    archive = Path(_file(tmp_path / "k.zip", _zip(_kaggle(n=4))))
    assert fetch.fetch("catdog", root=tmp_path / "data", source=str(archive), progress=progress).splits["val"] == 2
    assert notes == [
        f"cannot lock {tmp_path / 'data' / '.catdog.lock'} on this file system: run one fetch of catdog at a time"
    ]
    assert _leftovers(tmp_path) == []


def test_counts_are_checked_before_the_dataset_is_marked_complete(tmp_path, monkeypatch):
    archive = tmp_path / "k.zip"
    archive.write_bytes(_zip(_kaggle(n=10, unlabeled=4)))
    place, calls = layout._place, itertools.count()
    monkeypatch.setattr(layout, "_place", lambda src, folder, move: next(calls) == 5 or place(src, folder, move))
    with pytest.raises(CatdogError, match=r"7 of 8 images of train/\w+ arrived in the new dataset; nothing was kept"):
        fetch.fetch("catdog", root=tmp_path / "data", source=str(archive))
    assert not (tmp_path / "data" / "catdog").exists() and _leftovers(tmp_path) == []


# --- fetch --from FOLDER: the walking rules of training data ------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_a_folder_full_of_links_gives_each_image_once_in_its_own_class(tmp_path, seed):
    tree = linked_tree(tmp_path, seed)
    s = fetch.fetch("linked", root=tmp_path / "fetched", source=str(tree.top))
    got = {
        c: sorted(p.read_bytes() for split in ("train", "val") for p in (s.path / split / c).glob("*"))
        for c in s.classes
    }
    everything = [b for bs in got.values() for b in bs]
    assert len(everything) == len(set(everything)), tree.hazards  # no image twice, in one class or two
    for cls, images in tree.real.items():  # every image in its own class
        assert {p.read_bytes() for p in images} <= set(got[cls]), tree.hazards
    outside = {p.read_bytes() for p in tree.outside}
    assert set(everything) - {p.read_bytes() for ps in tree.real.values() for p in ps} <= outside, tree.hazards


def test_a_folder_linked_into_itself_is_copied_once_and_what_was_left_out_is_reported(tmp_path):
    src = tmp_path / "src"
    for c in ("cat", "dog"):
        for i in range(3):
            (src / c).mkdir(parents=True, exist_ok=True)
            (src / c / f"{i}.jpg").write_bytes(_jpeg(i + (c == "dog") * 10))
    (src / "cat" / "again").symlink_to("..", target_is_directory=True)  # a loop back to the top
    (src / "cat" / "dogs").symlink_to("../dog", target_is_directory=True)  # into another class
    (src / "kitty").symlink_to("cat", target_is_directory=True)  # a class folder under a second name
    s = fetch.fetch("mine", root=tmp_path / "data", source=str(src))
    assert s.classes == ["cat", "dog"] and s.splits == {"train": 4, "val": 2}
    assert dict(s.skipped) == {
        "kitty/": "same folder as cat/, walked once",
        **{f"cat/dogs/{i}.jpg": f"same file as dog/{i}.jpg" for i in range(3)},
    }


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_named_like_an_image_is_reported_not_read(tmp_path):
    src = tmp_path / "src"
    for c in ("cat", "dog"):
        (src / c).mkdir(parents=True)
        for i in range(3):
            (src / c / f"{i}.jpg").write_bytes(_jpeg(i))
    os.mkfifo(src / "cat" / "pipe.jpg")  # reading it would block forever
    (src / "dog" / "gone.jpg").symlink_to("nowhere.jpg")
    s = fetch.fetch("mine", root=tmp_path / "data", source=str(src))
    assert dict(s.skipped) == {
        "cat/pipe.jpg": "not a regular file",
        "dog/gone.jpg": "cannot read (No such file or directory)",
    }
    assert s.splits == {"train": 4, "val": 2}


# --- archives inside an archive ---------------------------------------------------------------------------


def test_inner_archives_that_hold_the_same_paths_are_refused_with_a_count(tmp_path):
    k = _kaggle(n=5, unlabeled=0)
    outer = {
        "train.zip": _zip({n: d for n, d in k.items() if n.startswith("train/")}),
        "train2.zip": _zip({n: _jpeg(99) for n in list(k)[:3]} | {"train/cat.77.jpg": _jpeg(7)}),
    }
    archive = tmp_path / "dogs-vs-cats.zip"
    archive.write_bytes(_zip(outer))
    with pytest.raises(CatdogError, match=r"refusing train2\.zip: 3 of its entries would overwrite a file"):
        fetch.fetch(None, root=tmp_path / "data", source=str(archive))
    assert not (tmp_path / "data" / "dogs-vs-cats").exists() and _leftovers(tmp_path) == []


def test_archives_nested_deeper_than_kaggle_are_refused(tmp_path):
    data = _zip(_kaggle(n=3, unlabeled=0))
    for depth in range(3):
        data = _zip({f"level{depth}.zip": data})
    archive = tmp_path / "deep.zip"
    archive.write_bytes(data)
    with pytest.raises(CatdogError, match="archives nested more than 3 deep"):
        fetch.fetch(None, root=tmp_path / "data", source=str(archive))
    assert _leftovers(tmp_path) == []


def test_a_bomb_inside_an_archive_counts_toward_the_outer_archives_budget(tmp_path):
    inner = _deflated({f"train/cat.{i}.jpg": bytes(1 << 20) for i in range(4)})  # 4 MiB of zeros in 5 KB
    archive = tmp_path / "outer.zip"
    archive.write_bytes(_zip({"train.zip": inner}))  # the outer archive alone is harmless
    with pytest.raises(CatdogError, match=r"refusing train\.zip: it unpacks to more than 100 times"):
        fetch.fetch(None, root=tmp_path / "data", source=str(archive))
    assert _leftovers(tmp_path) == [] and not (tmp_path / "data" / "outer").exists()


# --- bounded: --max-size ------------------------------------------------------------------------------------


def test_max_size_lets_a_trusted_archive_through_and_caps_a_folder_copy(tmp_path):
    bomb = {f"train/{c}.{i}.jpg": _jpeg(i) + b"\0" * (1 << 20) for c in ("cat", "dog") for i in range(3)}
    archive = tmp_path / "big.zip"
    archive.write_bytes(_deflated(bomb))
    with pytest.raises(CatdogError, match="unpacks to more than 100 times"):
        fetch.fetch(None, root=tmp_path / "data", source=str(archive))
    s = fetch.fetch(None, root=tmp_path / "data", source=str(archive), max_size=0.01)
    assert s.splits == {"train": 4, "val": 2}
    with pytest.raises(CatdogError, match=r"the images to copy take 6(\.\d+)? MiB, over the 1\.02 MiB limit"):
        fetch.fetch("copy", root=tmp_path / "data", source=str(s.path), max_size=0.001)
    assert _leftovers(tmp_path) == []


class _Received(FetchProgress):
    """Counts the bytes a download took in."""

    def __init__(self):
        self.bytes = 0

    def advance(self, n):
        self.bytes += n


def test_a_download_without_length_stops_at_the_cap_and_is_deleted(fetch_server, tmp_path):
    fetch_server.streams["/endless.zip"] = 64 << 20
    received = _Received()
    with pytest.raises(CatdogError, match=r"endless\.zip is over the 1 MiB limit .*the download was deleted"):
        fetch.fetch("x", root=tmp_path, source=fetch_server.url("/endless.zip"), max_size=1 / 1024, progress=received)
    assert received.bytes <= 1 << 20  # it hung up at the cap, not at the end
    assert _leftovers(tmp_path) == [] and not (tmp_path / "x").exists()


def test_a_download_announced_over_the_cap_is_not_started(fetch_server, tmp_path):
    fetch_server.files["/big.zip"] = b"\0" * (2 << 20)
    with pytest.raises(CatdogError, match="is over the 1 MiB limit"):
        fetch.fetch("x", root=tmp_path, source=fetch_server.url("/big.zip"), max_size=1 / 1024)
    assert _leftovers(tmp_path) == []


def test_a_registry_download_stops_when_it_passes_its_known_size(fetch_server, tmp_path, monkeypatch):
    fetch_server.streams["/h.zip"] = 64 << 20
    monkeypatch.setitem(
        REGISTRY,
        "hymenoptera",
        REGISTRY["hymenoptera"].__class__(url=fetch_server.url("/h.zip"), size=1 << 20, sha256=None),
    )
    received = _Received()
    with pytest.raises(CatdogError, match=r"size mismatch .* expected 1048576 bytes, the server sends"):
        fetch.fetch("hymenoptera", root=tmp_path, progress=received)
    assert received.bytes <= 1 << 20 and _leftovers(tmp_path) == []


@pytest.mark.parametrize("length", ["abc", "-5", ""])
def test_a_nonsense_content_length_is_ignored(fetch_server, tmp_path, length):
    fetch_server.files["/h.zip"] = _zip(_hymenoptera())
    fetch_server.lengths["/h.zip"] = length
    assert fetch.fetch("hymenoptera", root=tmp_path, source=fetch_server.url("/h.zip")).splits["val"] == 6


# --- no traceback, nothing left behind -----------------------------------------------------------------------


def _file(path: Path, data: bytes = b"x") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def _fifo(path: Path) -> str:
    os.mkfifo(path)
    return str(path)


def _encrypted_zip(path: Path) -> str:
    data = bytearray(_zip(_kaggle(n=3)))
    for m in re.finditer(b"PK\x03\x04|PK\x01\x02", bytes(data)):  # every entry's "encrypted" flag
        data[m.start() + (6 if data[m.start() + 2] == 3 else 8)] |= 1
    return _file(path, bytes(data))


def _nested_clash(path: Path) -> str:
    inner = _zip(_kaggle(n=3, unlabeled=0))
    return _file(path, _zip({"a.zip": inner, "b.zip": inner}))


KAGGLE = ("--from", "{tmp}/kaggle.zip")
BAD_FETCHES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "an empty zip": (lambda t: ["--from", _file(t / "e.zip", _zip({}))], "e.zip is empty"),
    "a zip of folders": (lambda t: ["--from", _file(t / "f.zip", _zip({"train/": b""}))], "f.zip is empty"),
    "zeros for a tar": (lambda t: ["--from", _file(t / "z.tar", bytes(10240))], "z.tar is empty"),
    "a zero-byte archive": (lambda t: ["--from", _file(t / "n.zip", b"")], "not a zip or tar"),
    "an encrypted zip": (lambda t: ["--from", _encrypted_zip(t / "s.zip")], "is encrypted"),
    "clashing inner zips": (lambda t: ["--from", _nested_clash(t / "c.zip")], "would overwrite"),
    "a zip bomb": (
        lambda t: ["--from", _file(t / "b.zip", _deflated({"train/cat.1.jpg": bytes(4 << 20)}))],
        "unpacks to more than",
    ),
    "--root a file": (lambda t: ["catdog", "--root", _file(t / "f")], "is a file"),
    "--root below a file": (lambda t: ["catdog", *KAGGLE, "--root", _file(t / "f") + "/sub"], "is a file"),
    "--from a FIFO": (lambda t: ["x", "--from", _fifo(t / "p.zip")], "is not a file or a folder"),
    "--from a device": (lambda t: ["x", "--from", "/dev/zero"], "is not a file or a folder"),
    "--from nothing": (lambda t: ["x", "--from", str(t / "nope.zip")], "no such file or folder"),
    "--from ''": (lambda t: ["--from", ""], "--from is empty"),
    "--from file://": (lambda t: ["x", "--from", "file:///etc/passwd"], "http and https"),
    "--from ftp://": (lambda t: ["x", "--from", "ftp://example.com/x.zip"], "http and https"),
    "--from a URL without a host": (lambda t: ["--from", "https:///x.zip"], "names no host"),
    "--from a broken IPv6 URL": (lambda t: ["x", "--from", "http://[::1/x.zip"], "not a valid URL"),
    "--from a URL with a bad port": (lambda t: ["--from", "http://127.0.0.1:99999/x.zip"], "not a valid URL"),
    "--sha256 short": (lambda t: ["catdog", "--sha256", "abc"], "64 hex digits"),
    "--sha256 on a folder": (lambda t: ["x", "--from", str(t), "--sha256", "0" * 64], "not a folder"),
    "a bad name": (lambda t: ["../up", *KAGGLE], "bad dataset name"),
    "an unknown name": (lambda t: ["nosuch"], "unknown dataset"),
    "a foreign folder, forced": (
        lambda t: ["mine", *KAGGLE, "--force"] if _file(t / "data" / "mine" / "x.txt") else [],
        "not a dataset made by catdog fetch; move it away",
    ),
    **{
        f"--max-size {v}": (lambda t, v=v: ["catdog", *KAGGLE, "--max-size", v], "--max-size is in GiB")
        for v in ("nan", "inf", "-inf", "-1", "0", "1e300", "1e-300")
    },
    "--max-size without a dataset": (lambda t: ["--weights", "resnet18", "--max-size", "nan"], "--max-size"),
}


@pytest.mark.parametrize("case", BAD_FETCHES)
def test_a_bad_fetch_is_one_line_and_leaves_nothing(tmp_path, case):
    make, message = BAD_FETCHES[case]
    (tmp_path / "kaggle.zip").write_bytes(_zip(_kaggle(n=3)))
    args = [a.replace("{tmp}", str(tmp_path)) for a in make(tmp_path)]
    before = set(tmp_path.rglob("*"))
    line = error_line(catdog("fetch", *args, *([] if "--root" in args else ["--root", tmp_path / "data"])))
    assert message in line
    new = set(tmp_path.rglob("*")) - before
    assert {p for p in new if p.is_file()} == set(), new  # nothing written
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("home", ["file", "file/below"])
def test_catdog_home_that_is_a_file_is_one_line_wherever_a_dataset_is_looked_up(tmp_path, monkeypatch, home):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("CATDOG_HOME", str(tmp_path / home))
    assert "$CATDOG_HOME" in error_line(catdog("fetch", "catdog"))
    assert "$CATDOG_HOME" in error_line(catdog("train", "--data", "catdog", "--epochs", "1"))


MARKERS: dict[str, bytes] = {
    "not JSON": b"{",
    "a list": b"[]",
    "null": b"null",
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "not UTF-8": b"\xff\xfe\x00",
    "a field missing": json.dumps({"name": "catdog"}).encode(),
    "classes a number": json.dumps(
        {
            "name": "catdog",
            "path": "/x",
            "classes": 5,
            "splits": {},
            "skipped": [],
            "cached": False,
            "source": "",
            "sha256": None,
        }
    ).encode(),
    "a negative count": json.dumps(
        {
            "name": "catdog",
            "path": "/x",
            "classes": ["cat"],
            "splits": {"train": -1},
            "skipped": [],
            "cached": False,
            "source": "",
            "sha256": None,
        }
    ).encode(),
    "skipped not pairs": json.dumps(
        {
            "name": "catdog",
            "path": "/x",
            "classes": ["cat"],
            "splits": {"train": 1},
            "skipped": [["a", "b"]],
            "cached": False,
            "source": "",
            "sha256": None,
        }
    ).encode(),
}


@pytest.mark.parametrize("marker", [*MARKERS, "a folder"])
def test_a_damaged_marker_is_one_line_and_force_rebuilds(tmp_path, marker):
    dataset = tmp_path / "data" / "catdog"
    dataset.mkdir(parents=True)
    if marker == "a folder":
        (dataset / MARKER).mkdir()
    else:
        (dataset / MARKER).write_bytes(MARKERS[marker])
    archive = tmp_path / "k.zip"
    archive.write_bytes(_zip(_kaggle(n=5)))
    line = error_line(catdog("fetch", "catdog", "--root", tmp_path / "data", "--from", archive))
    assert line.endswith(f"has a damaged {MARKER}; pass --force to fetch it again")
    s = fetch.fetch("catdog", root=tmp_path / "data", source=str(archive), force=True)
    assert s.splits == {"train": 8, "val": 2, "unlabeled": 4} and _leftovers(tmp_path) == []


def _deny(monkeypatch, module, name: str, path: Path, error: int = errno.EACCES) -> None:
    """module.name raises `error` for path, as it would for a user who may not read (or write) it."""
    real = getattr(module, name)

    def denied(p, *args, **kwargs):
        if isinstance(p, (str, os.PathLike)) and path in (Path(p), Path(p).parent):
            raise OSError(error, os.strerror(error), os.fspath(p))
        return real(p, *args, **kwargs)

    monkeypatch.setattr(module, name, denied)


def test_an_unreadable_source_or_unwritable_root_is_one_line(tmp_path, monkeypatch):
    src = tmp_path / "src"
    for c in ("cat", "dog"):
        for i in range(3):
            _file(src / c / f"{i}.jpg", _jpeg(i))
    archive = Path(_file(tmp_path / "k.zip", _zip(_kaggle(n=3))))
    root = tmp_path / "data"
    with monkeypatch.context() as m:
        _deny(m, os, "scandir", src)
        assert error_line(catdog("fetch", "x", "--from", src, "--root", root)).endswith(f"{src}: Permission denied")
    with monkeypatch.context() as m:
        _deny(m, builtins, "open", archive)
        assert error_line(catdog("fetch", "x", "--from", archive, "--root", root)).endswith(
            f"{archive}: Permission denied"
        )
    for error in (errno.EACCES, errno.EROFS):
        with monkeypatch.context() as m:
            _deny(m, os, "open", root, error)
            assert error_line(catdog("fetch", "x", "--from", archive, "--root", root)).endswith(os.strerror(error))
    assert _leftovers(tmp_path) == [] and list(root.iterdir()) == []


def test_an_unreadable_class_folder_is_reported_and_the_rest_fetched(tmp_path, monkeypatch):
    src = tmp_path / "src"
    for c in ("cat", "dog", "fox"):
        for i in range(3):
            _file(src / c / f"{i}.jpg", _jpeg(i))
    _deny(monkeypatch, os, "scandir", src / "fox")
    s = fetch.fetch("x", root=tmp_path / "data", source=str(src))
    assert s.classes == ["cat", "dog"] and s.skipped == [("fox/", "cannot read (Permission denied)")]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may read anything")
def test_unreadable_for_real(tmp_path):
    src = tmp_path / "src"
    _file(src / "cat" / "0.jpg", _jpeg())
    src.chmod(0)
    archive = Path(_file(tmp_path / "k.zip", _zip(_kaggle(n=3))))
    try:
        assert "Permission denied" in error_line(catdog("fetch", "x", "--from", src, "--root", tmp_path / "d"))
        archive.chmod(0)
        assert "Permission denied" in error_line(catdog("fetch", "x", "--from", archive, "--root", tmp_path / "d"))
        archive.chmod(0o600)
        (tmp_path / "ro").mkdir(0o500)
        assert "Permission denied" in error_line(catdog("fetch", "x", "--from", archive, "--root", tmp_path / "ro"))
    finally:
        src.chmod(0o700)
    assert _leftovers(tmp_path) == []


class _FailingWrites:
    """os.open (for writing), os.mkdir, os.replace and os.link, with write number `at` raising `fault`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count, self.at, self.fault = 0, -1, None
        for module, name in ((os, "open"), (os, "mkdir"), (os, "replace"), (os, "link")):
            monkeypatch.setattr(module, name, self._wrap(name, getattr(module, name)))

    def _wrap(self, name: str, real: Callable) -> Callable:
        def write(*args, **kwargs):
            if name != "open" or args[1] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):  # not rmtree's reads
                self.count += 1
                if self.count - 1 == self.at:
                    raise self.fault
            return real(*args, **kwargs)

        return write

    def arm(self, at: int, fault: BaseException | None = None) -> None:
        self.count, self.at, self.fault = 0, at, fault


@pytest.mark.parametrize("source", ["archive", "folder", "forced"])
def test_a_fetch_that_fails_at_any_write_leaves_nothing(tmp_path, monkeypatch, source):
    """Disk full (or Ctrl-C) at each write a fetch makes, in turn: it fails in one line, or succeeds, and leaves
    no temporary folder, lock or half dataset behind; a dataset replaced with --force is there, old or new."""
    archive = Path(_file(tmp_path / "k.zip", _zip(_kaggle(n=4, unlabeled=2))))
    if source == "folder":
        fetch.fetch("src", root=tmp_path, source=str(archive))
        archive = tmp_path / "src"
    writes = _FailingWrites(monkeypatch)

    def run(root: Path, at: int, fault: BaseException | None = None) -> DatasetSummary:
        if source == "forced":
            fetch.fetch("x", root=root, source=str(archive))  # the dataset --force replaces
        writes.arm(at, fault)
        return fetch.fetch("x", root=root, source=str(archive), force=source == "forced")

    run(tmp_path / "counting", -1)
    assert writes.count > 20
    complete = {"train/cat": 3, "train/dog": 3, "val/cat": 1, "val/dog": 1, "unlabeled": 2}
    for k in range(writes.count):
        root = tmp_path / str(k)
        try:
            s = run(root, k, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) if k % 4 else KeyboardInterrupt())
        except CatdogError as e:
            assert str(e).endswith(os.strerror(errno.ENOSPC)) and "\n" not in str(e)
        except KeyboardInterrupt:
            assert not k % 4
        else:
            assert s.splits == {"train": 6, "val": 2, "unlabeled": 2}
        assert _leftovers(root) == [], k
        if source == "forced" or (root / "x").exists():
            assert _tree(root / "x") == complete and (root / "x" / MARKER).is_file(), k


def test_a_damaged_marker_of_a_dataset_from_elsewhere_needs_its_source_again(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / MARKER).write_text("{")
    with pytest.raises(CatdogError, match="which said where it came from; pass --force with --from"):
        fetch.fetch("mine", root=tmp_path, force=True)
    assert (tmp_path / "mine" / MARKER).read_text() == "{"


def test_the_torch_free_list_of_dataset_names_is_the_registry():
    from catdog_cli.core.defaults import KNOWN_DATASETS

    assert tuple(REGISTRY) == KNOWN_DATASETS


class _FullDisk:
    """A disk with `room` bytes left: a file opened for writing (open, os.fdopen) takes writes until the disk is
    full; then a write stores what fits and raises ENOSPC, naming no file, as a real full disk's write does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, room: int) -> None:
        self.room = room
        for module, name in ((builtins, "open"), (os, "fdopen")):
            monkeypatch.setattr(module, name, functools.partial(self._open, getattr(module, name)))

    def _open(self, real: Callable, file, mode: str = "r", *args, **kwargs):
        opened = real(file, mode, *args, **kwargs)
        return _Filling(opened, self) if set(mode) & set("wax+") else opened


class _Filling:
    def __init__(self, file, disk: _FullDisk) -> None:
        self.file, self.disk = file, disk

    def write(self, data: bytes) -> int:
        if len(data) > self.disk.room:
            self.file.write(data[: self.disk.room])
            self.disk.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.disk.room -= len(data)
        return self.file.write(data)

    def __enter__(self) -> _Filling:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def __getattr__(self, name: str):
        return getattr(self.file, name)


FULL = os.strerror(errno.ENOSPC)


def test_a_disk_that_fills_while_extracting_is_one_line_naming_the_entry_and_leaves_nothing(tmp_path, monkeypatch):
    """The write names no file: the line said 'cannot extract k.zip: No space left on device', not what."""
    archive = Path(_file(tmp_path / "k.zip", _zip(_kaggle(n=4, unlabeled=2))))
    root = tmp_path / "data"
    with monkeypatch.context() as m:
        _FullDisk(m, room=sum(len(_jpeg(i)) for i in range(3)) + 10)  # train/cat.0-2.jpg fit, cat.3 does not
        line = error_line(catdog("fetch", "x", "--from", archive, "--root", root))
    assert re.fullmatch(rf"error: cannot write 'train/cat\.3\.jpg' of {re.escape(str(archive))}: {FULL}", line)
    assert _leftovers(tmp_path) == [] and list(root.iterdir()) == []  # no dataset, no temp folder, no lock
    assert fetch.fetch("x", root=root, source=str(archive)).splits == {"train": 6, "val": 2, "unlabeled": 2}


def test_a_disk_filling_while_downloading_is_one_line_naming_its_part_and_resumes(fetch_server, tmp_path, monkeypatch):
    data = _zip(_hymenoptera())
    fetch_server.files["/h.zip"] = data
    root = tmp_path / "data"
    with monkeypatch.context() as m:
        _FullDisk(m, room=len(data) // 2)
        line = error_line(catdog("fetch", "hymenoptera", "--from", fetch_server.url("/h.zip"), "--root", root))
    (part,) = (root / ".downloads").iterdir()  # kept, to resume from: the one thing left
    assert line == f"error: cannot write {part}: {FULL}" and part.name.endswith(".part")
    assert part.stat().st_size == len(data) // 2 and [p.name for p in root.iterdir()] == [".downloads"]
    fetch_server.log.clear()
    s = fetch.fetch("hymenoptera", root=root, source=fetch_server.url("/h.zip"))
    assert fetch_server.log == [("/h.zip", f"bytes={len(data) // 2}-")]
    assert s.splits == {"train": 13, "val": 6} and _leftovers(tmp_path) == []
