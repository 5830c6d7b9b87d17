"""Batch sources: resident (decoded once, index gathers) and streaming (decode per batch) yield the same batches."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from catdog_cli.core.config import TrainConfig
from catdog_cli.core.events import Events
from catdog_cli.data import decode as data
from catdog_cli.data import sources
from catdog_cli.data.dataset import load_dataset
from catdog_cli.data.decode import ImageBatch, ImageSpec, decode_split
from catdog_cli.data.sources import (
    DecodeCache,
    Loader,
    ResidentSource,
    StreamingSource,
    ThreadedSource,
    batches,
    memory_budget,
)
from catdog_cli.training.loop import fit

CPU = torch.device("cpu")
EVAL = ImageSpec(train=False, resize=20, crop=16)
TRAIN = ImageSpec(train=True, resize=20, crop=16)


def _fake_batch(n: int) -> ImageBatch:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()
    return ImageBatch(images, torch.arange(n) % 3, torch.arange(n))


@pytest.fixture
def count_decodes(monkeypatch):
    """Counts calls of data.open_rgb (one per image decode) from any thread."""
    calls, lock, real = [], threading.Lock(), data.open_rgb

    def counting(path, *args, **kwargs):
        with lock:
            calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(data, "open_rgb", counting)
    return calls


def test_resident_unshuffled_covers_every_sample_once_in_order():
    source = ResidentSource(_fake_batch(10), batch_size=4, shuffle=False)
    got = list(source)
    assert len(source) == 3 and [len(b) for b in got] == [4, 4, 2]
    assert torch.cat([b.index for b in got]).tolist() == list(range(10))
    for b in got:  # images and labels travel with their index
        assert torch.equal(b.labels, b.index % 3) and torch.equal(b.images[:, 0, 0, 0], b.index.to(torch.uint8))


def _epoch_order(source, epoch: int) -> list[int]:
    source.set_epoch(epoch)
    return torch.cat([b.index for b in source]).tolist()


def test_resident_shuffled_epochs_are_fresh_permutations_fixed_by_seed_and_epoch():
    source = ResidentSource(_fake_batch(12), batch_size=4, shuffle=True, seed=0)
    epochs = [_epoch_order(source, e) for e in range(3)]
    assert len(source) == 3
    for order in epochs:
        assert sorted(order) == list(range(12))
    assert epochs[0] != epochs[1] != epochs[2]
    # a resumed run (a new source, same seed) sees epoch 1 exactly as the first run did
    assert _epoch_order(ResidentSource(_fake_batch(12), batch_size=4, shuffle=True, seed=0), 1) == epochs[1]


def test_resident_shuffled_drops_the_ragged_tail_but_never_the_only_batch():
    source = ResidentSource(_fake_batch(10), batch_size=4, shuffle=True, seed=0)
    seen = torch.cat([b.index for b in source]).tolist()
    assert len(seen) == 8 and len(set(seen)) == 8 and len(source) == 2
    small = ResidentSource(_fake_batch(3), batch_size=8, shuffle=True, seed=0)
    assert [sorted(b.index.tolist()) for b in small] == [[0, 1, 2]]


def test_decode_cache_decodes_each_image_once(image_folder, count_decodes):
    split = load_dataset(image_folder(layout="flat", train=4, val=0), val_split=None).split("all")
    cache = DecodeCache()
    first = cache.get(split, EVAL, Loader(CPU, 4, 2, budget=2**30))
    assert sorted(count_decodes) == sorted(split.paths)
    again = cache.get(split, EVAL, Loader(CPU, 4, 2, budget=2**30))
    assert again is first and len(count_decodes) == len(split)
    assert not first.streamed and len(first.batch) == len(split)

    cache.get(split, TRAIN, Loader(CPU, 4, 2, budget=2**30))  # another spec is another entry
    assert len(count_decodes) == 2 * len(split)


def test_over_budget_streams_without_decoding_up_front(image_folder, count_decodes):
    split = load_dataset(image_folder(layout="flat", train=4, val=0), val_split=None).split("all")
    cache = DecodeCache()
    source = batches(split, EVAL, Loader(CPU, 4, 0, budget=1, cache=cache))
    assert isinstance(source, StreamingSource) and count_decodes == []
    list(source)
    assert len(count_decodes) == len(split)


def test_budget_counts_what_is_already_cached(image_folder):
    root = image_folder(layout="flat", train=4, val=0)
    split = load_dataset(root, val_split=None).split("all")
    cache = DecodeCache()
    one_split = len(split) * EVAL.bytes_per_image()
    assert not cache.get(split, EVAL, Loader(CPU, 4, 1, budget=one_split)).streamed
    other = load_dataset(root, val_split=None).split("all")
    other.paths, other.labels = other.paths[:-1], other.labels[:-1]
    assert cache.get(other, EVAL, Loader(CPU, 4, 1, budget=one_split)).streamed


@pytest.mark.parametrize("spec", [EVAL, TRAIN], ids=["eval", "train"])
def test_streaming_yields_the_same_batches_as_resident(image_folder, spec):
    split = load_dataset(image_folder(layout="flat", train=5, val=0), val_split=None).split("all")
    resident = batches(split, spec, Loader(CPU, 4, 1, budget=2**30, cache=DecodeCache()))
    streaming = batches(split, spec, Loader(CPU, 4, 0, budget=1, cache=DecodeCache()))
    assert isinstance(resident, ResidentSource) and isinstance(streaming, StreamingSource)
    a, b = list(resident), list(streaming)
    assert len(a) == len(b) == len(resident) == len(streaming) == 3
    for x, y in zip(a, b):
        assert torch.equal(x.labels, y.labels) and torch.equal(x.index, y.index)
        assert x.images.dtype == y.images.dtype == torch.uint8
        if spec.train:  # per-batch canvases are smaller than the whole split's: compare the valid regions
            assert torch.equal(x.sizes, y.sizes) and torch.equal(x.transposed, y.transposed)
            for i, (h, w) in enumerate(x.sizes.tolist()):
                assert torch.equal(x.images[i, :, :h, :w], y.images[i, :, :h, :w])
        else:
            assert torch.equal(x.images, y.images) and x.sizes is None and y.sizes is None


def test_streaming_skips_undecodable_files(image_folder):
    root = image_folder(layout="flat", train=3, val=0)
    (root / "cat" / "bad.jpg").write_bytes(b"garbage")
    split = load_dataset(root, val_split=None).split("all")
    reported = []
    loader = Loader(CPU, 4, 0, on_skip=lambda path, reason: reported.append(path))
    source = StreamingSource(split, EVAL, loader, shuffle=False)
    for _ in range(2):
        seen = torch.cat([b.index for b in source]).tolist()
    bad = split.paths.index(root / "cat" / "bad.jpg")
    assert sorted(seen) == [i for i in range(len(split)) if i != bad]
    assert reported == [root / "cat" / "bad.jpg"]  # named once, not once per epoch
    assert source.skipped == [(root / "cat" / "bad.jpg", "not an image, or a format Pillow cannot read")]


@pytest.mark.parametrize("budget", [2**30, 1], ids=["resident", "streamed"])
def test_the_loader_hears_each_file_left_out_once_whichever_source_the_budget_gives(image_folder, budget):
    root = image_folder(layout="flat", train=3, val=0)
    (root / "cat" / "bad.jpg").write_bytes(b"garbage")
    split = load_dataset(root, val_split=None).split("all")
    told, tasks = [], []

    class Tasks(Events):
        def task(self, description, total, batch=1):
            tasks.append((description, total))

    loader = Loader(CPU, 4, 0, budget=budget, events=Tasks(), on_skip=lambda path, reason: told.append(path))
    source = batches(split, EVAL, loader, name="val")
    for _ in range(2):
        assert all(len(b) == len(b.index) for b in source)
    assert told == [root / "cat" / "bad.jpg"] == [path for path, _ in source.skipped]
    assert tasks == [("decoding val", len(split))]


def test_streaming_shuffle_is_seeded(image_folder):
    split = load_dataset(image_folder(layout="flat", train=6, val=0), val_split=None).split("all")

    def order(seed):
        return torch.cat([b.index for b in StreamingSource(split, EVAL, Loader(CPU, 4, 0, seed), True)]).tolist()

    assert order(3) == order(3)
    assert sorted(order(3)) != order(3) or sorted(order(4)) != order(4)
    assert len(order(3)) == 12  # 12 images, batch 4: no ragged tail to drop


def test_decode_split_batches_match_resident_source_format(image_folder):
    split = load_dataset(image_folder(layout="flat", train=2, val=0), val_split=None).split("all")
    batch, skipped = decode_split(split, TRAIN, workers=1)
    assert skipped == [] and batch.images.dtype == torch.uint8 and batch.images.shape[:2] == (4, 3)
    assert batch.sizes.shape == (4, 2) and batch.transposed.dtype == torch.bool


def test_memory_budget_flag_and_default():
    assert memory_budget(CPU, 0.5) == 2**29
    assert memory_budget(CPU) > 0


class _Notes(Events):
    def __init__(self):
        self.notes = []

    def note(self, text):
        self.notes.append(text)


def test_training_runs_on_the_streaming_path(image_folder, tmp_path):
    root = image_folder(layout="flat", train=6, val=2)
    events = _Notes()
    config = TrainConfig(
        str(root),
        backbone="squeezenet1_1",  # the data path is under test: the smallest backbone (resnet18's last.pt: 134 MB)
        epochs=2,
        batch_size=4,
        image_size=32,
        weights="none",
        device="cpu",
        cache_gib=1e-9,
        workers=0,
    )
    result = fit(config, tmp_path / "run", events)
    assert sum("over the memory budget" in n for n in events.notes) == 2  # train and val both streamed
    assert result["epochs"] == 2 and len(result["history"]) == 2
    assert all(math.isfinite(r["train_loss"]) and r["images_per_sec"] > 0 for r in result["history"])
    assert result["evaluation"]["num_images"] == 4
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "last.pt").is_file()


@pytest.mark.parametrize("spec", [EVAL, TRAIN], ids=["eval", "train"])
@pytest.mark.parametrize("workers", [1, 3])
def test_threaded_yields_the_resident_batches_in_split_order(image_folder, spec, workers):
    split = load_dataset(image_folder(layout="flat", train=5, val=0), val_split=None).split("all")
    resident = batches(split, spec, Loader(CPU, 4, 1, budget=2**30, cache=DecodeCache()))
    threaded = ThreadedSource(split, spec, Loader(CPU, 4, workers), ahead=1)
    a, b = list(resident), list(threaded)
    assert len(a) == len(b) == len(threaded) == 3
    for x, y in zip(a, b):
        assert torch.equal(x.labels, y.labels) and torch.equal(x.index, y.index)
        if spec.train:
            for i, (h, w) in enumerate(x.sizes.tolist()):
                assert torch.equal(x.images[i, :, :h, :w], y.images[i, :, :h, :w])
        else:
            assert torch.equal(x.images, y.images)


def test_threaded_skips_undecodable_files_once_each(image_folder):
    root = image_folder(layout="flat", train=3, val=0)
    (root / "dog" / "empty.jpg").write_bytes(b"")
    split = load_dataset(root, val_split=None).split("all")
    reported = []
    source = ThreadedSource(split, EVAL, Loader(CPU, 2, 2, on_skip=lambda path, reason: reported.append(path)))
    for _ in range(2):
        seen = torch.cat([b.index for b in source]).tolist()
    bad = split.paths.index(root / "dog" / "empty.jpg")
    assert seen == [i for i in range(len(split)) if i != bad]
    assert reported == [root / "dog" / "empty.jpg"] and source.skipped == [(root / "dog" / "empty.jpg", "empty file")]


def test_threaded_decodes_only_a_few_batches_ahead_of_the_model(image_folder, monkeypatch):
    """Memory stays bounded however long the list: image i is decoded only once the consumer has taken all but
    the last `workers + ahead` batches before it (batch size 1 here)."""
    split = load_dataset(image_folder(layout="flat", train=10, val=0), val_split=None).split("all")
    consumed, leads, lock, real = [0], [], threading.Lock(), data.open_rgb

    def decode(path, *args, **kwargs):
        with lock:
            leads.append(split.paths.index(path) - consumed[0])
        return real(path, *args, **kwargs)

    monkeypatch.setattr(data, "open_rgb", decode)
    for _ in ThreadedSource(split, EVAL, Loader(CPU, 1, 2), ahead=1):
        with lock:
            consumed[0] += 1
    assert len(leads) == len(split) == 20 and max(leads) <= 3


def test_on_cuda_the_budget_counts_cached_images_once_and_caps_cache_gib_by_free_memory(monkeypatch):
    gpu = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * 2**30, 80 * 2**30))
    assert memory_budget(gpu) == 5 * 2**30
    # compare's later cells: 6 GiB of images are already on the GPU (no longer free): the budget still covers them
    assert memory_budget(gpu, cached=6 * 2**30) == 8 * 2**30
    assert memory_budget(gpu, 4.0) == 4 * 2**30
    assert memory_budget(gpu, 100.0) == 9 * 2**30  # --cache-gib over what the GPU has: capped, no OOM at decode


def test_a_split_larger_than_the_host_can_decode_streams(image_folder, monkeypatch, count_decodes):
    """Decoding up front holds a split in host memory at about twice its size: over what is available, stream."""
    split = load_dataset(image_folder(layout="flat", train=4, val=0), val_split=None).split("all")
    size = len(split) * EVAL.bytes_per_image()
    monkeypatch.setattr(sources, "host_available", lambda: 2 * size - 1)
    assert DecodeCache().get(split, EVAL, Loader(CPU, 4, 1, budget=2**30)).streamed and count_decodes == []
    monkeypatch.setattr(sources, "host_available", lambda: 2 * size)
    assert not DecodeCache().get(split, EVAL, Loader(CPU, 4, 1, budget=2**30)).streamed


def test_image_batches_pin_their_tensors_in_the_dataloader(monkeypatch):
    """pin_memory=True reaches the streamed batches (DataLoader pins what collate made): only then is a
    non_blocking copy to the GPU asynchronous."""
    from torch.utils.data._utils.pin_memory import pin_memory

    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: pinned.append(self) or self.clone())
    batch = ImageBatch(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]), torch.tensor([5, 6]))
    out, skipped = pin_memory((batch, [("a.jpg", "unreadable")]))  # what _collate_streamed returns
    assert isinstance(out, ImageBatch) and len(pinned) == 3 and skipped == [("a.jpg", "unreadable")]
    assert torch.equal(out.index, batch.index) and out.images is not batch.images and out.sizes is None
