"""From a dataset's splits to batches a model can take: decoded once and resident on the device when a split
fits the memory budget, else decoded per batch; and the one place where a batch becomes model input.

Every source yields `ImageBatch`es of uint8 images on the device and follows one protocol (`BatchSource`),
so the loops above never ask which kind of source feeds them.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Protocol

import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from catdog_cli.core.events import Events
from catdog_cli.core.world import World
from catdog_cli.data.dataset import Dataset, Split, no_val_reason, shard
from catdog_cli.data.decode import Decoded, ImageBatch, ImageError, ImageSpec, collate, decode_split, default_workers
from catdog_cli.data.presets import Preset
from catdog_cli.errors import CatdogError


def memory_budget(device: torch.device, gib: float | None = None, cached: int = 0) -> int:
    """Bytes the decoded images may take: half the GPU memory free (or a quarter of the machine's RAM), `--cache-gib`
    when given, but never more than the GPU has free. `cached`: bytes of decoded images already on the device
    (compare's earlier cells), which the GPU's free memory no longer counts but the cache does."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        room = free + cached
        return min(int(gib * 2**30), room * 9 // 10) if gib is not None else room // 2
    if gib is not None:
        return int(gib * 2**30)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def host_available() -> int:
    """Bytes of host memory available now (MemAvailable: free plus what the kernel can reclaim)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


@dataclass(frozen=True, eq=False)
class Loader:
    """How images become batches, decided once per run or pass and handed to every source built from it (what
    torchvision's references hand around as a DataLoader): the device batches go to, the batch size, the decode
    workers (None: one per CPU core), the seed of the shuffle, the bytes of decoded images the device may keep
    (`memory_budget`; 0: nothing is kept, every split streams), the cache that keeps them across runs, and where the
    work is told: `events` hears each decode task and note, `on_skip` each file left out (default: `events.skip`)."""

    device: torch.device
    batch_size: int
    workers: int | None = None
    seed: int = 0
    budget: int = 0
    cache: DecodeCache = field(default_factory=lambda: DecodeCache())
    events: Events = field(default_factory=Events)
    on_skip: Callable[[Path, str], None] | None = None

    @property
    def threads(self) -> int:
        """Decode workers: as given, or one per CPU core this process may use."""
        return default_workers() if self.workers is None else self.workers

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    def skip(self, path: Path, reason: str) -> None:
        (self.on_skip or self.events.skip)(path, reason)


class BatchSource(Protocol):
    """What the train and eval loops read: resident images, streamed images and cached features alike."""

    skipped: list[tuple[Path, str]]  # files left out so far, with the reason

    def __iter__(self) -> Iterator[ImageBatch]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


class ResidentSource:
    """A decoded split held on the device: batches are index gathers, shuffled on the device.

    Epoch e's order depends only on (seed, e), as with DistributedSampler.set_epoch: a resumed run sees the
    same batches as an uninterrupted one. With `class_weights` (--balance) an epoch draws its images
    with replacement, each with its class's weight, instead of a permutation.
    """

    def __init__(
        self,
        batch: ImageBatch,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        skipped: list[tuple[Path, str]] | None = None,
        class_weights: list[float] | None = None,
    ):
        self.batch, self.batch_size, self.shuffle, self.seed = batch, batch_size, shuffle, seed
        self.skipped = list(skipped or [])
        self.sample_weights = None
        if class_weights is not None:
            self.sample_weights = torch.tensor(class_weights, device=batch.labels.device)[batch.labels]
        self.epoch = 0
        self.generator = torch.Generator(device=batch.labels.device)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.batch)
        return max(1, n // self.batch_size) if self.shuffle else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[ImageBatch]:
        n, device = len(self.batch), self.batch.labels.device
        if self.shuffle:
            self.generator.manual_seed(self.seed + self.epoch)
            if self.sample_weights is not None:
                order = torch.multinomial(self.sample_weights, n, replacement=True, generator=self.generator)
            else:
                order = torch.randperm(n, generator=self.generator, device=device)
        else:
            order = torch.arange(n, device=device)
        for i in range(len(self)):
            end = (i + 1) * self.batch_size if i < len(self) - 1 or self.shuffle else n
            yield self.batch.select(order[i * self.batch_size : end])


class _StreamedSplit(torch.utils.data.Dataset):
    def __init__(self, split: Split, spec: ImageSpec):
        self.split, self.spec = split, spec

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> Decoded | tuple[Path, str]:
        try:
            return self.spec.decode(self.split, i)
        except ImageError as exc:
            return self.split.paths[i], str(exc)


def _collate_streamed(items, train: bool) -> tuple[ImageBatch | None, list[tuple[Path, str]]]:
    decoded = [d for d in items if isinstance(d, Decoded)]
    skipped = [d for d in items if not isinstance(d, Decoded)]
    return (collate(decoded, train) if decoded else None), skipped


class _PerBatchSource:
    """What the sources that decode per batch share: unreadable files are dropped from their batch, listed in
    `skipped` and told to the loader once each; batches go to the loader's device."""

    def __init__(self, loader: Loader):
        self.loader = loader
        self.skipped: list[tuple[Path, str]] = []
        self._named: set[Path] = set()

    def _decoded(self) -> Iterator[tuple[ImageBatch | None, list[tuple[Path, str]]]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[ImageBatch]:
        for batch, skipped in self._decoded():
            for path, reason in skipped:
                if path not in self._named:
                    self._named.add(path)
                    self.skipped.append((path, reason))
                    self.loader.skip(path, reason)
            if batch is not None:
                yield batch.to(self.loader.device)


class StreamingSource(_PerBatchSource):
    """Decode per batch in DataLoader workers, prefetching, for training splits over the budget."""

    def __init__(
        self, split: Split, spec: ImageSpec, loader: Loader, shuffle: bool, class_weights: list[float] | None = None
    ):
        """`class_weights` (--balance): a shuffled epoch draws its images with replacement, by class weight."""
        super().__init__(loader)
        self.seed = loader.seed
        workers = loader.threads
        self.generator = torch.Generator().manual_seed(loader.seed)
        sampler = None
        if shuffle and class_weights is not None:
            sampler = WeightedRandomSampler(
                [class_weights[y] for y in split.labels], len(split), generator=self.generator
            )
        self.batches = DataLoader(
            _StreamedSplit(split, spec),
            batch_size=loader.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            drop_last=shuffle and len(split) > loader.batch_size,
            num_workers=workers,
            collate_fn=partial(_collate_streamed, train=spec.train),
            pin_memory=loader.pin_memory,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers else None,
            generator=self.generator,
        )

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def _decoded(self) -> Iterator[tuple[ImageBatch | None, list[tuple[Path, str]]]]:
        yield from self.batches


class ThreadedSource(_PerBatchSource):
    """One pass over a split in order (evaluating a checkpoint, predicting), decoded in threads a few batches
    ahead while the model computes the current one: decode and compute overlap, memory stays bounded.

    Threads rather than DataLoader processes: PIL releases the GIL while it decodes and resizes, and a thread
    pool starts at once and copies nothing between processes.
    """

    def __init__(self, split: Split, spec: ImageSpec, loader: Loader, ahead: int = 2):
        super().__init__(loader)
        self.images, self.batch_size = _StreamedSplit(split, spec), loader.batch_size
        self.workers, self.ahead = max(1, loader.threads), max(1, ahead)

    def set_epoch(self, epoch: int) -> None:
        pass  # always in split order

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def _batch(self, start: int) -> tuple[ImageBatch | None, list[tuple[Path, str]]]:
        end = min(start + self.batch_size, len(self.images))
        return _collate_streamed([self.images[i] for i in range(start, end)], self.images.spec.train)

    def _decoded(self) -> Iterator[tuple[ImageBatch | None, list[tuple[Path, str]]]]:
        starts = iter(range(0, len(self.images), self.batch_size))
        with ThreadPoolExecutor(self.workers, thread_name_prefix="catdog-decode") as pool:
            pending = deque(pool.submit(self._batch, start) for start in islice(starts, self.workers + self.ahead))
            while pending:
                done = pending.popleft().result()
                pending.extend(pool.submit(self._batch, start) for start in islice(starts, 1))
                yield done


@dataclass
class DecodedSplit:
    """A split decoded whole and the files it had to skip; `batch` is None when the split is streamed instead."""

    batch: ImageBatch | None
    skipped: list[tuple[Path, str]]
    streamed: bool = False


class DecodeCache:
    """Decoded splits by (files, spec, device), so that many runs in one process decode each image once."""

    def __init__(self):
        self._entries: dict[tuple, DecodedSplit] = {}

    def resident_bytes(self) -> int:
        """Bytes of the decoded images held (counted against the memory budget)."""
        return sum(e.batch.images.numel() for e in self._entries.values() if e.batch is not None)

    def get(self, split: Split, spec: ImageSpec, loader: Loader) -> DecodedSplit:
        """The split decoded on the loader's device (told to its events image by image), or marked to stream when
        it is over the loader's budget."""
        key = (tuple(split.paths), tuple(split.labels), spec, str(loader.device))
        if key not in self._entries:
            size = len(split) * spec.bytes_per_image()
            # a split is decoded in host memory first, about twice its size (the images, then their stack):
            # over what the host has available it streams, rather than the process dying without a word
            if self.resident_bytes() + size > loader.budget or 2 * size > host_available():
                self._entries[key] = DecodedSplit(None, [], streamed=True)
            else:
                batch, skipped = decode_split(split, spec, loader.threads, loader.events.advance)
                self._entries[key] = DecodedSplit(batch.to(loader.device) if batch is not None else None, skipped)
        return self._entries[key]


def batches(
    split: Split,
    spec: ImageSpec,
    loader: Loader,
    shuffle: bool = False,
    name: str = "",
    class_weights: list[float] | None = None,
) -> BatchSource | None:
    """The fastest source the loader's budget allows, or None when no image of the split could be decoded.

    Files left out are told to the loader (named once each) and listed in the source's `skipped`.
    `class_weights` (--balance): a shuffled epoch draws its images by class weight.
    """
    loader.events.task(f"decoding {name}", len(split))
    decoded = loader.cache.get(split, spec, loader)
    if decoded.streamed:
        loader.events.note(f"{name}: {len(split)} images are over the memory budget; decoding per batch instead")
        return StreamingSource(split, spec, loader, shuffle, class_weights)
    for path, reason in decoded.skipped:
        loader.skip(path, reason)
    if decoded.batch is None:
        return None
    return ResidentSource(decoded.batch, loader.batch_size, shuffle, loader.seed, decoded.skipped, class_weights)


@dataclass
class DataSources:
    """This process's batch sources and the splits behind them (under torchrun: this rank's shard of each)."""

    train: BatchSource
    val: BatchSource
    test: BatchSource | None
    splits: dict[str, Split]
    class_weights: list[float] | None = None  # what train draws its images by (--balance)

    @property
    def skipped(self) -> list[tuple[Path, str]]:
        """Files left out: found while decoding up front, or while streaming."""
        return [item for source in (self.train, self.val, self.test) if source for item in source.skipped]


def open_sources(
    dataset: Dataset,
    preset: Preset,
    loader: Loader,
    augment: bool,
    world: World = World(),
    class_weights: list[float] | None = None,
) -> DataSources:
    """Decode train, val (and test) once into the loader's cache, or set up streaming when over its budget.

    `class_weights`: train draws its images by class weight (--balance)."""
    found: dict[str, BatchSource | None] = {}
    splits: dict[str, Split] = {}
    for name in ("train", "val", "test"):
        split = dataset.splits.get(name)
        if not split:
            found[name] = None
            continue
        if world.distributed:
            split = shard(split, world.rank, world.size, loader.seed, equal=name == "train")
        splits[name] = split
        train = name == "train"
        spec = preset.train_spec(augment) if train else preset.eval_spec()
        found[name] = batches(split, spec, loader, train, name, class_weights if train else None)
    if found["train"] is None:
        raise CatdogError(f"no usable training images in {dataset.root}")
    if found["val"] is None:
        raise CatdogError(no_val_reason(dataset))
    return DataSources(found["train"], found["val"], found["test"], splits, class_weights)
