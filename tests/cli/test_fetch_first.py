"""`--data NAME` of a dataset catdog knows and has not fetched yet: every command that takes --data fetches it
first, as `catdog fetch NAME` does, and goes on; offline, one line names `catdog fetch NAME --from ARCHIVE`.
The downloader serves an archive built here (tests/data/test_fetch.py tests the download itself): no network."""

from __future__ import annotations

import hashlib
import io
import socket
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
from helpers import TINY_CLI, catdog, error_line, make_photo, ok_json

from catdog_cli.data import fetch
from catdog_cli.data.catalog import MARKER, REGISTRY

NOTE = "--data hymenoptera: fetching it into {} first (as `catdog fetch hymenoptera` does)"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data root, and a working folder that holds no dataset."""
    monkeypatch.setenv("CATDOG_HOME", str(tmp_path / "home"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path / "home"


def _archive(folder: Path) -> bytes:
    """hymenoptera_data.zip's layout, small: hymenoptera_data/{train,val}/{ants,bees}/*.png, no two alike."""
    for k, cls in enumerate(("ants", "bees")):
        for split, n in (("train", 4), ("val", 2)):
            for i in range(n):
                make_photo(folder / split / cls / f"{i}.png", seed=100 * k + 10 * n + i, size=(32, 24))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(folder.rglob("*.png")):
            zf.write(path, f"hymenoptera_data/{path.relative_to(folder).as_posix()}")
    return buf.getvalue()


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The downloader serves the archive built here, with its progress calls: the URLs it was asked for."""
    data, asked = _archive(tmp_path / "archive"), []

    def download(url, dest, *, progress, description, **checks):
        asked.append(url)
        progress.start(len(data), description)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        progress.advance(len(data))
        progress.done()
        return hashlib.sha256(data).hexdigest()

    monkeypatch.setattr(fetch, "download", download)
    return asked


def test_train_fetches_a_known_dataset_first_then_trains(home, served):
    result = catdog("train", "--data", "hymenoptera", "--epochs", "1", *TINY_CLI, "--workers", "0", "--json")
    run = ok_json(result)
    assert served == [REGISTRY["hymenoptera"].url]  # the registry's archive, through fetch's own code path
    assert NOTE.format(home / "hymenoptera") in result.stderr
    assert (home / "hymenoptera" / MARKER).is_file() and not (home / ".downloads").exists()
    assert run["classes"] == ["ants", "bees"] and run["images"] == {"train": 8, "val": 4}


def test_check_fetches_once_then_reads_the_fetched_copy(home, served):
    first = catdog("check", "hymenoptera", "--no-features", "--fail-on", "never", "--json")
    assert ok_json(first)["images"] == 12 and NOTE.format(home / "hymenoptera") in first.stderr
    again = catdog("check", "hymenoptera", "--no-features", "--fail-on", "never", "--json")
    assert ok_json(again)["images"] == 12 and "fetching" not in again.stderr
    assert served == [REGISTRY["hymenoptera"].url]  # once


def test_only_a_known_name_with_nothing_there_is_fetched(home, served):
    assert fetch.fetch_named("mine") is None  # not a dataset catdog knows: resolve_data says what it read
    (home / "catdog").mkdir(parents=True)  # something at ROOT/NAME is read as it is (or refused), never replaced
    assert fetch.fetch_named("catdog") is None
    Path("hymenoptera").mkdir()  # a folder here comes first (the names-vs-folders note names the other)
    assert fetch.fetch_named("hymenoptera") is None
    assert served == [] and list(home.iterdir()) == [home / "catdog"]


def _offline(request, timeout=None):
    raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))


@pytest.mark.parametrize(
    "args",
    [
        ("train", "--data", "hymenoptera", *TINY_CLI),
        ("compare", "--data", "hymenoptera", "--backbones", "squeezenet1_1", "--strategies", "freeze"),
        ("lr-find", "--data", "hymenoptera", "--strategies", "freeze"),
        ("evaluate", "best.pt", "--data", "hymenoptera"),
        ("check", "hymenoptera", "--no-features"),
    ],
    ids=lambda args: args[0],
)
def test_offline_every_command_that_takes_data_says_how_to_fetch_from_a_file(home, monkeypatch, args):
    """The real downloader, with no name resolution: one line, the fetch command to run, nothing left behind."""
    monkeypatch.setattr(urllib.request, "urlopen", _offline)
    Path("best.pt").write_bytes(b"not read: the data is fetched before the model loads")
    result = catdog(*args)
    line = error_line(result)
    assert line.startswith("error: --data hymenoptera is not fetched yet, and fetching it failed: cannot reach ")
    url = REGISTRY["hymenoptera"].url
    assert line.endswith("; download it another way and run `catdog fetch hymenoptera --from ARCHIVE`")
    assert line.count(url) == 1 and "--from FILE" not in line  # the URL and the advice once each
    assert result.stderr.strip().splitlines() == [NOTE.format(home / "hymenoptera"), line]
    assert list(home.iterdir()) == []  # no dataset, no temporary folder, no empty .downloads/
