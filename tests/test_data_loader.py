"""The loader: batches keep per-picture targets, and a seed gives the same batches whatever the workers."""

from __future__ import annotations

import pytest
import torch

from ssd.data import build_dataset, build_loader, build_transforms, collate_detection
from ssd.data.loader import AugmentedDataset


def _batches(loader, count=3):
    out = []
    for index, (images, targets) in enumerate(loader):
        if index == count:
            break
        out.append((images, targets))
    return out


def _same(a, b) -> bool:
    return all(
        torch.equal(images_a, images_b)
        and all(
            torch.equal(ta["boxes"], tb["boxes"]) and ta["image_id"] == tb["image_id"]
            for ta, tb in zip(targets_a, targets_b, strict=True)
        )
        for (images_a, targets_a), (images_b, targets_b) in zip(a, b, strict=True)
    )


def test_collate_stacks_same_size_pictures_and_keeps_targets_apart():
    sample = lambda h, w, n: (torch.zeros(3, h, w, dtype=torch.uint8), {"boxes": torch.zeros(n, 4)})  # noqa: E731
    images, targets = collate_detection([sample(8, 8, 1), sample(8, 8, 3)])
    assert images.shape == (2, 3, 8, 8) and images.dtype == torch.uint8
    assert [len(t["boxes"]) for t in targets] == [1, 3]
    images, targets = collate_detection([sample(8, 8, 0), sample(9, 8, 2)])
    assert isinstance(images, list) and [i.shape[1] for i in images] == [8, 9]


def test_batches_are_reproducible_and_independent_of_workers():
    dataset = build_dataset("synthetic", "train", num_images=24, seed=0)
    transform = build_transforms("ssd", 64)
    make = lambda workers, seed=5: build_loader(  # noqa: E731
        dataset, 4, transform=transform, num_workers=workers, seed=seed, persistent_workers=False
    )
    first = _batches(make(0))
    assert first[0][0].shape == (4, 3, 64, 64) and first[0][0].dtype == torch.uint8
    assert len(first[0][1]) == 4 and all(t["boxes"].shape[1] == 4 for t in first[0][1])
    assert _same(first, _batches(make(0)))
    assert _same(first, _batches(make(2))), "two workers give exactly the batches one process gives"
    assert not _same(first, _batches(make(0, seed=6)))


def test_each_epoch_differs_and_any_epoch_can_be_replayed():
    dataset = build_dataset("synthetic", "val", num_images=8)
    loader = build_loader(dataset, 8, transform=build_transforms("ssd", 48), num_workers=0, seed=1)
    epoch0, epoch1 = _batches(loader, 1), _batches(loader, 1)
    assert [t["image_id"] for t in epoch0[0][1]] != [t["image_id"] for t in epoch1[0][1]]
    loader.sampler.set_epoch(0)
    assert _same(epoch0, _batches(loader, 1))


def test_unshuffled_loader_keeps_the_dataset_order_and_every_picture():
    dataset = build_dataset("synthetic", "test", num_images=10)
    loader = build_loader(dataset, 4, shuffle=False, num_workers=0)
    ids = [t["image_id"] for _, targets in loader for t in targets]
    assert ids == list(range(1, 11))
    images, _ = next(iter(loader))
    assert isinstance(images, list), "no resize: pictures of different sizes stay a list"


@pytest.mark.parametrize(
    ("size", "decoded"),
    [((2001, 1501), (1001, 751)), ((4000, 3000), (1000, 750)), ((1200, 900), (1200, 900))],
)
def test_a_large_jpeg_decodes_reduced_for_training_with_its_boxes_scaled(tmp_path, size, decoded):
    from data_writers import write_voc

    width, height = size
    root = write_voc(tmp_path / "voc", {"a": [("cat", 100, 200, 1100, 800)]}, width=width, height=height)
    dataset = build_dataset(root, "train")
    whole, whole_target = dataset.load(0)
    assert tuple(whole.shape[1:]) == (height, width)
    image, target = AugmentedDataset(dataset, None, shorter_side_at_least=640)[0]
    assert tuple(image.shape[1:]) == (decoded[1], decoded[0])
    scale = torch.tensor([decoded[0] / width, decoded[1] / height] * 2)
    assert torch.allclose(target["boxes"], whole_target["boxes"] * scale)
    assert target["area"].item() == pytest.approx(whole_target["area"].item() * scale[0] * scale[1])
    assert target["orig_size"] == (height, width)
