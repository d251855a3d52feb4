"""Batches for training and evaluation: a seeded sampler, per-sample random generators, and a collate that
keeps each picture's target.

Reproducibility does not depend on the number of workers: the sampler, in the main process, draws the order of
an epoch and one seed per sample from `seed` and the epoch number; a worker (or the main process) builds the
sample's augmentation generator from that seed. The same `seed` gives the same batches with 0, 2 or 8 workers.

Per-sample work runs on one thread: the tensors are small, and with several threads each little operation pays
thread hand-off costs many times its work (on a busy 2-core machine, 30 ms instead of 0.2 ms). DataLoader's
workers already run on one thread; `single_threaded` makes the main process do the same while it loads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ssd.data.dataset import DetectionDataset, Transform, single_threaded


class SeededSampler(Sampler):
    """Yields `(index, sample_seed)`: a fresh order every epoch (when `shuffle`) and a seed for each sample,
    both from `seed` and the epoch number, so any epoch can be replayed."""

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0):
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator) if self.shuffle else torch.arange(self.size)
        seeds = torch.randint(0, 2**62, (self.size,), generator=generator)
        self.epoch += 1  # the next pass over the loader is the next epoch unless set_epoch says otherwise
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))


class AugmentedDataset(Dataset):
    """`dataset`'s samples through `transform`, indexed by the sampler's `(index, sample_seed)` pairs.

    `shorter_side_at_least` lets a large JPEG decode at a fraction of its size (see `DetectionDataset.load`):
    training resizes every picture to the input size anyway, and decoding and augmenting a 2000 px picture
    would otherwise take longer than a CPU's training step.
    """

    def __init__(
        self, dataset: DetectionDataset, transform: Transform | None, shorter_side_at_least: int | None = None
    ):
        self.dataset, self.transform = dataset, transform
        self.shorter_side_at_least = shorter_side_at_least

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int] | int) -> tuple[Tensor, dict]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        return load_sample(self.dataset, index, self.transform, seed, self.shorter_side_at_least)


def load_sample(
    dataset: DetectionDataset,
    index: int,
    transform: Transform | None = None,
    seed: int | None = None,
    shorter_side_at_least: int | None = None,
) -> tuple[Tensor, dict]:
    """Sample `index` of `dataset` (no `dataset.transform`) through `transform`, with its randomness drawn
    from a generator seeded with `seed` (the global RNG when None), on one thread."""
    with single_threaded():
        image, target = dataset.load(index, shorter_side_at_least)
        if transform is not None:
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
            image, target = transform(image, target, generator)
        return image.contiguous(), target  # a no-op after a resize; decoded pictures are channels-last views


def collate_detection(batch: Sequence[tuple[Tensor, dict]]) -> tuple[Tensor | list[Tensor], list[dict]]:
    """Pictures as one uint8 (B, 3, H, W) tensor when they share a size (the training presets end in a
    resize), else as a list; targets always as a list of per-picture dicts."""
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    if all(image.shape == images[0].shape for image in images):
        with single_threaded():  # a copy of a few MB: threads only add hand-off costs
            return torch.stack(images), targets
    return images, targets


def build_loader(
    dataset: DetectionDataset,
    batch_size: int,
    *,
    transform: Transform | None = None,
    shuffle: bool = True,
    num_workers: int = 2,
    seed: int = 0,
    drop_last: bool = False,
    persistent_workers: bool = True,
) -> DataLoader:
    """A DataLoader of `(images, targets)` batches. `transform` defaults to `dataset.transform`; the loader
    applies it with per-sample seeded generators (see the module's docstring), the dataset's own is not
    applied twice. Call `loader.sampler.set_epoch(epoch)` to replay a given epoch."""
    sampler = SeededSampler(len(dataset), shuffle=shuffle, seed=seed)
    return DataLoader(
        AugmentedDataset(dataset, transform if transform is not None else dataset.transform),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_detection,
        drop_last=drop_last,
        persistent_workers=persistent_workers and num_workers > 0,
        pin_memory=False,
    )
