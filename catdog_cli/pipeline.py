"""Batch sources: decoded once and resident on the device when the split fits the budget, else streamed.

Both yield `ImageBatch`es of uint8 images on the device; augment.py turns them into model input, so the
engine above is the same whichever source feeds it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from catdog_cli.data import Decoded, ImageBatch, ImageError, ImageSpec, Split, collate, decode_split, default_workers


def memory_budget(device: torch.device, gib: float | None = None) -> int:
    """Bytes the decoded images may take: half the free GPU memory, or a quarter of the machine's RAM."""
    if gib is not None:
        return int(gib * 2**30)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


class ResidentSource:
    """A decoded split held on the device: batches are index gathers, shuffled on the device.

    Epoch e's order depends only on (seed, e), as with DistributedSampler.set_epoch: a resumed run sees the
    same batches as an uninterrupted one.
    """

    def __init__(self, batch: ImageBatch, batch_size: int, shuffle: bool, seed: int = 0):
        self.batch, self.batch_size, self.shuffle, self.seed = batch, batch_size, shuffle, seed
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


class StreamingSource:
    """Decode per batch in DataLoader workers (one per core), prefetching, for splits over the budget.

    Undecodable files are dropped from their batch and reported once each through `on_skip`.
    """

    def __init__(self, split: Split, spec: ImageSpec, batch_size: int, shuffle: bool, device: torch.device,
                 seed: int = 0, workers: int | None = None, on_skip: Callable[[Path, str], None] | None = None):
        self.device, self.seed, self.on_skip = device, seed, on_skip
        self.skipped: dict[Path, str] = {}
        workers = default_workers() if workers is None else workers
        self.loader = DataLoader(
            _StreamedSplit(split, spec), batch_size=batch_size, shuffle=shuffle,
            drop_last=shuffle and len(split) > batch_size, num_workers=workers,
            collate_fn=partial(_collate_streamed, train=spec.train), pin_memory=device.type == "cuda",
            persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
            generator=torch.Generator().manual_seed(seed),
        )

    def set_epoch(self, epoch: int) -> None:
        self.loader.generator.manual_seed(self.seed + epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[ImageBatch]:
        for batch, skipped in self.loader:
            for path, reason in skipped:
                if path not in self.skipped:
                    self.skipped[path] = reason
                    if self.on_skip:
                        self.on_skip(path, reason)
            if batch is not None:
                yield batch.to(self.device)


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

    def get(self, split: Split, spec: ImageSpec, device: torch.device, budget: int, workers: int,
            on_image: Callable[[], None] | None = None) -> DecodedSplit:
        key = (tuple(split.paths), tuple(split.labels), spec, str(device))
        if key not in self._entries:
            used = sum(e.batch.images.numel() for e in self._entries.values() if e.batch is not None)
            if used + len(split) * spec.bytes_per_image() > budget:
                self._entries[key] = DecodedSplit(None, [], streamed=True)
            else:
                batch, skipped = decode_split(split, spec, workers, on_image)
                self._entries[key] = DecodedSplit(batch.to(device) if batch is not None else None, skipped)
        return self._entries[key]


def batches(split: Split, spec: ImageSpec, batch_size: int, shuffle: bool, device: torch.device,
            cache: DecodeCache, budget: int, seed: int = 0, workers: int | None = None,
            on_image: Callable[[], None] | None = None, on_skip: Callable[[Path, str], None] | None = None,
            ) -> tuple[ResidentSource | StreamingSource | None, DecodedSplit]:
    """The fastest source the budget allows (None when no image could be decoded) and what was skipped."""
    workers = default_workers() if workers is None else workers
    decoded = cache.get(split, spec, device, budget, workers, on_image)
    if decoded.streamed:
        return StreamingSource(split, spec, batch_size, shuffle, device, seed, workers, on_skip), decoded
    if decoded.batch is None:
        return None, decoded
    return ResidentSource(decoded.batch, batch_size, shuffle, seed), decoded
