"""The built-in synthetic dataset: seeded, learnable (distinct classes, sizes small to large, some overlap),
and the same on disk as on the fly."""

from __future__ import annotations

import torch

from ssd.data import build_dataset, write_synthetic_coco
from ssd.data.formats.synthetic import CLASS_NAMES, SyntheticShapes
from ssd.ops.boxes import box_iou


def test_same_seed_same_pictures_other_seed_other_pictures():
    a = SyntheticShapes("train", 5, seed=1)
    b = SyntheticShapes("train", 5, seed=1)
    c = SyntheticShapes("train", 5, seed=2)
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(5))
    assert not torch.equal(a[0][0], c[0][0])
    assert not torch.equal(a[0][0], SyntheticShapes("val", 5, seed=1)[0][0]), "splits differ"
    assert torch.equal(a[3][0], a[3][0]), "a picture is the same however often it is asked for"


def test_samples_follow_the_convention_and_targets_need_no_pictures():
    dataset = build_dataset("synthetic", "val", num_images=20, seed=0)
    assert dataset.class_names == CLASS_NAMES and dataset.num_classes == len(CLASS_NAMES) + 1
    for index in range(len(dataset)):
        image, target = dataset[index]
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert target["orig_size"] == tuple(image.shape[1:])
        assert target["image_id"] == index + 1
        assert torch.equal(target["boxes"], dataset.get_target(index)["boxes"])
        boxes = target["boxes"]
        assert ((boxes[:, 2] - boxes[:, 0]) >= 8).all() and ((boxes[:, 3] - boxes[:, 1]) >= 8).all()
        assert (boxes[:, 2] <= image.shape[2]).all() and (boxes[:, 3] <= image.shape[1]).all()
        assert target["labels"].min() >= 1 and target["labels"].max() <= len(CLASS_NAMES)


def test_objects_are_drawn_inside_their_boxes_in_their_colour():
    dataset = SyntheticShapes("train", 30, seed=0, image_size=200)
    colours = {}
    for index in range(len(dataset)):
        image, target = dataset[index]
        owned = torch.zeros(image.shape[1:], dtype=torch.int64)
        for box, label in zip(target["boxes"].long().tolist(), target["labels"].tolist(), strict=True):
            owned[box[1] : box[3], box[0] : box[2]] = label  # later shapes are drawn over earlier ones
        for box, label in zip(target["boxes"].long().tolist(), target["labels"].tolist(), strict=True):
            x1, y1, x2, y2 = box
            cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
            if owned[cy, cx] == label and CLASS_NAMES[label - 1] != "triangle":
                colours.setdefault(label, []).append(image[:, cy, cx].float())
    means = {label: torch.stack(values).mean(dim=0) for label, values in colours.items()}
    assert len(means) == len(CLASS_NAMES) - 1
    labels = sorted(means)
    for i in labels:
        for j in labels:
            if i < j:
                assert (means[i] - means[j]).abs().max() > 60, "each class has its own colour"


def test_sizes_range_from_small_to_large_and_some_boxes_overlap():
    dataset = SyntheticShapes("train", 300, seed=0)
    sides, overlapping = [], 0
    for record in dataset.records:
        boxes = record.boxes
        sides += ((boxes[:, 2:] - boxes[:, :2]).min(dim=1).values / min(record.height, record.width)).tolist()
        iou = box_iou(boxes, boxes) - torch.eye(len(boxes))
        overlapping += int((iou > 0.05).any())
    sides = torch.tensor(sides)
    assert sides.min() < 0.08 and sides.max() > 0.45
    assert (sides < 0.15).sum() > 100 and (sides > 0.3).sum() > 100
    assert overlapping > 20
    labels = torch.cat([r.labels for r in dataset.records])
    assert torch.bincount(labels, minlength=6)[1:].min() > 100, "every class is well represented"


def test_written_coco_loads_back_to_the_same_pictures_and_boxes(tmp_path):
    written = write_synthetic_coco(tmp_path, {"train": 4, "val": 2}, seed=3)
    assert set(written) == {"train", "val"}
    on_disk = build_dataset(tmp_path, "train")
    on_the_fly = SyntheticShapes("train", 4, seed=3)
    assert on_disk.class_names == on_the_fly.class_names
    for index in range(4):
        disk_image, disk_target = on_disk[index]
        fly_image, fly_target = on_the_fly[index]
        assert torch.equal(disk_image, fly_image), "PNG is lossless"
        assert torch.equal(disk_target["boxes"], fly_target["boxes"])
        assert torch.equal(disk_target["labels"], fly_target["labels"])
        assert disk_target["file_name"] == fly_target["file_name"]
