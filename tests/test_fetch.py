"""`catdog fetch`, offline: archives built here and served from a loopback HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import socket
import sys
import tarfile
import threading
import types
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from catdog_cli import archives, fetch
from catdog_cli.errors import CatdogError
from catdog_cli.fetch import MARKER, REGISTRY, DatasetSummary, FetchProgress

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


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
    e = {f"hymenoptera_data/{s}/{c}/{i}.jpg": _jpeg(i) for s, n in (("train", 6), ("val", 3))
         for c in ("ants", "bees") for i in range(n)}
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
    """Temporary folders and partial downloads a fetch must not leave behind."""
    return sorted(p.name for p in root.rglob("*") if p.name.endswith((".tmp", ".part", ".download")))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- loopback server ------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    """Serves server.files; honours `Range: bytes=N-` unless told not to; can cut a response mid-way."""

    def do_GET(self):
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range")))
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
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cuts.get(self.path, 0) > 0:  # send a third, then hang up
            srv.cuts[self.path] -= 1
            body = body[: len(body) // 3]
        self.wfile.write(body)
        srv.sent += len(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fetch_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.log, srv.cuts, srv.no_range, srv.sent = {}, [], {}, set(), 0
    srv.url = lambda path: f"http://127.0.0.1:{srv.server_address[1]}{path}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def fetch_offline(monkeypatch, tmp_path):
    """No sleeping between retries, and nothing written to the user's real data folder."""
    monkeypatch.setattr(archives, "BACKOFF_S", 0.0)
    monkeypatch.setattr(archives, "TIMEOUT_S", 5.0)
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
    monkeypatch.setitem(REGISTRY, "hymenoptera",
                        entry.__class__(url=fetch_server.url("/h.zip"), size=len(data), sha256=_sha(data)))
    s = fetch.fetch("hymenoptera")
    assert s.path == tmp_path / "home" / "hymenoptera" and s.splits["train"] == 13


def test_registry_size_mismatch_refused(fetch_server, tmp_path, monkeypatch):
    data = _zip(_hymenoptera())
    fetch_server.files["/h.zip"] = data
    monkeypatch.setitem(REGISTRY, "hymenoptera", REGISTRY["hymenoptera"].__class__(
        url=fetch_server.url("/h.zip"), size=len(data) + 1, sha256=None))
    with pytest.raises(CatdogError, match="size mismatch"):
        fetch.fetch("hymenoptera", root=tmp_path)
    assert not (tmp_path / "hymenoptera").exists() and _leftovers(tmp_path) == []


def test_google_filtered_layout_renames_classes(fetch_server, tmp_path):
    e = {f"cats_and_dogs_filtered/{s}/{c}s/{c}.{i}.jpg": _jpeg(i) for s, n in (("train", 5), ("validation", 2))
         for c in ("cat", "dog") for i in range(n)}
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
    outer = {"train.zip": _zip({n: d for n, d in k.items() if n.startswith("train/")}),
             "test1.zip": _zip({n: d for n, d in k.items() if n.startswith("test1/")}),
             "sampleSubmission.csv": b"id,label\n"}
    archive = tmp_path / "dogs-vs-cats.zip"
    archive.write_bytes(_zip(outer))
    s = fetch.fetch(None, root=tmp_path / "data", source=str(archive))
    assert s.name == "dogs-vs-cats" and s.splits == {"train": 8, "val": 2, "unlabeled": 2}


def test_class_folders_tar_gz_named_after_archive(tmp_path):
    archive = tmp_path / "flowers.tar.gz"
    archive.write_bytes(_tar({f"{c}/{i}.png" if c == "rose" else f"{c}/{i}.jpg": _jpeg(i)
                              for c in ("rose", "tulip") for i in range(5)}))
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


def test_unreachable_server_gives_up_after_retries(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CatdogError, match=rf"could not download .*{archives.RETRIES} tries"):
        fetch.fetch("x", root=tmp_path, source=f"http://127.0.0.1:{port}/x.zip")
    assert not (tmp_path / "x").exists()


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
    assert [s[0] for s in rec.steps] == ["downloading hymenoptera", "downloading hymenoptera",
                                          "extracting hymenoptera", "checking images"]
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

@pytest.mark.parametrize(("name", "kw", "message"), [
    ("nosuch", {}, "unknown dataset 'nosuch'"),
    (None, {}, "name a dataset"),
    ("../up", {"source": "x.zip"}, "bad dataset name"),
    ("catdog", {"sha256": "abc"}, "64 hex digits"),
    ("catdog", {"source": "/no/such/file.zip"}, "no such file or folder"),
])
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
    fake = types.ModuleType("catdog_cli.backbones")
    fake.prefetch_weights = lambda name: tmp_path / f"{name}.pth"
    monkeypatch.setitem(sys.modules, "catdog_cli.backbones", fake)
    assert fetch.fetch_weights(["resnet18", "mobilenet_v3_small"]) == {
        "resnet18": tmp_path / "resnet18.pth", "mobilenet_v3_small": tmp_path / "mobilenet_v3_small.pth"}


def test_custom_dataset_found_by_name_and_forced_from_its_source(tmp_path):
    archive = tmp_path / "pets.zip"
    archive.write_bytes(_zip(_kaggle(n=5)))
    first = fetch.fetch(None, root=tmp_path / "data", source=str(archive))
    assert fetch.fetch("pets", root=tmp_path / "data").cached
    again = fetch.fetch("pets", root=tmp_path / "data", force=True)
    assert not again.cached and again.splits == first.splits and again.source == str(archive)


def test_engine_finds_fetched_dataset_by_name(tmp_path):
    from catdog_cli.data import load_dataset

    archive = tmp_path / "k.zip"
    archive.write_bytes(_zip(_kaggle(n=10, unlabeled=3)))
    fetch.fetch("catdog", source=str(archive))  # into $CATDOG_HOME, as a user would
    ds = load_dataset("catdog")
    assert ds.classes == ["cat", "dog"] and ds.origin == "folders"
    assert len(ds.split("train")) == 16 and len(ds.split("val")) == 4


# --- the CLI --------------------------------------------------------------------------------------------

def _cli(*args: str):
    from typer.testing import CliRunner

    from catdog_cli.cli import app

    return CliRunner().invoke(app, ["fetch", *args])


def test_cli_json_and_table(fetch_server, tmp_path, monkeypatch):
    fetch_server.files["/hymenoptera_data.zip"] = _zip(_hymenoptera())
    url = fetch_server.url("/hymenoptera_data.zip")
    monkeypatch.setattr(fetch, "fetch_weights", lambda names: {n: tmp_path / f"{n}.pth" for n in names})
    r = _cli("hymenoptera", "--from", url, "--root", str(tmp_path), "--weights", "resnet18,mobilenet_v3_small",
             "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["datasets"][0]["splits"] == {"train": 13, "val": 6}
    assert out["weights"] == {"resnet18": str(tmp_path / "resnet18.pth"),
                              "mobilenet_v3_small": str(tmp_path / "mobilenet_v3_small.pth")}
    r = _cli("hymenoptera", "--root", str(tmp_path))
    assert r.exit_code == 0 and "ants, bees" in r.stdout and "already complete" in r.stdout


@pytest.mark.parametrize(("args", "message"), [
    ((), "nothing to fetch"),
    (("nosuch",), "unknown dataset"),
    (("catdog", "hymenoptera", "--from", "x.zip"), "one dataset at a time"),
])
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
    s = fetch.fetch("hymenoptera", root=tmp_path, source=url,
                    sha256="77a1531d2237f648377f1f5679db8436247ec91d158ba3d836ffc3a3da5c1034")  # SOURCES.md
    tree = _tree(s.path)
    assert sum(tree.values()) == 398 and set(tree) == {"train/ants", "train/bees", "val/ants", "val/bees"}
    assert (s.path / "train/ants/imageNotFound.gif").is_file()
    assert s.splits == {"train": 245, "val": 153} and s.classes == ["ants", "bees"]


def test_real_catdog_through_loopback(fetch_server, tmp_path):
    url = _serve_shared(fetch_server, "catdog.zip")
    s = fetch.fetch("catdog", root=tmp_path, source=url,
                    sha256="6eed6ea059791b81d0dae7e03995e4f8e9abaff45d64617fe24f0400413c4c4d")  # SOURCES.md
    assert s.splits["train"] + s.splits["val"] == 2002 and s.splits["unlabeled"] == 300
    assert _tree(s.path) == {"train/cat": 801, "train/dog": 801, "val/cat": 200, "val/dog": 200, "unlabeled": 300}
    assert s.skipped == []
