"""COCO loading (layout, sparse ids, crowd, negatives, bad data), coco_mini, and COCO export round trips."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from conftest import BCCD, COCO_MINI, shared_path
from data_writers import write_coco, write_picture, write_voc

from ssd.data import DataWarning, build_dataset, export_coco
from ssd.data.formats.coco import load_coco
from ssd.errors import DatasetError

CATEGORIES = [{"id": 0, "name": "zero"}, {"id": 7, "name": "seven"}, {"id": 90, "name": "ninety"}]


def _image(image_id, width=64, height=48):
    return {"id": image_id, "file_name": f"{image_id:04d}.jpg", "width": width, "height": height}


def _box(ann_id, image_id, category, bbox, **extra):
    return {"id": ann_id, "image_id": image_id, "category_id": category, "bbox": bbox, **extra}


def _load(path, split="train", **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = build_dataset(path, split, **kwargs)
    return dataset, [w for w in caught if issubclass(w.category, DataWarning)]


def test_ids_become_contiguous_labels_and_back(tmp_path):
    write_coco(
        tmp_path,
        "train2017",
        [_image(1), _image(2), _image(3)],
        [
            _box(1, 1, 90, [1, 2, 10, 20]),
            _box(2, 1, 0, [5, 5, 3, 4], iscrowd=1),
            _box(3, 2, 7, [0, 0, 64, 48]),
        ],
        CATEGORIES,
    )
    dataset, caught = _load(tmp_path, "train")  # "train" finds instances_train2017.json and train2017/
    assert caught == []
    assert dataset.class_names == ["zero", "seven", "ninety"] and dataset.num_classes == 4
    assert dataset.label_to_category_id == {1: 0, 2: 7, 3: 90}
    assert dataset.category_id_to_label == {0: 1, 7: 2, 90: 3}
    image, target = dataset[0]
    assert image.shape == (3, 48, 64) and image.dtype == torch.uint8
    assert target["boxes"].tolist() == [[1, 2, 11, 22], [5, 5, 8, 9]]
    assert target["labels"].tolist() == [3, 1]
    assert target["iscrowd"].tolist() == [False, True]
    assert target["image_id"] == 1 and target["file_name"] == "0001.jpg"
    assert len(dataset) == 3 and len(dataset.get_target(2)["boxes"]) == 0, "pictures without boxes are kept"


def test_json_given_directly_finds_its_pictures(tmp_path):
    json_path = write_coco(tmp_path / "data", "val", [_image(5)], [_box(1, 5, 7, [1, 1, 5, 5])], CATEGORIES)
    dataset, _ = _load(json_path)
    assert dataset.records[0].path == tmp_path / "data" / "val" / "0005.jpg"
    elsewhere = tmp_path / "pictures"
    write_picture(elsewhere / "0005.jpg")
    moved = load_coco(json_path, image_root=elsewhere)
    assert moved.records[0].path == elsewhere / "0005.jpg"


def test_bad_annotations_are_dropped_and_named(tmp_path):
    images = [_image(1), _image(2), _image(3), _image(4, width=32)]
    annotations = [
        _box(10, 1, 42, [1, 1, 5, 5]),  # unknown category id
        _box(11, 99, 7, [1, 1, 5, 5]),  # points at no picture
        _box(12, 1, 7, [1, 1, 0, 5]),  # zero size
        _box(13, 1, 7, [10, 10, -5, 5]),  # inverted (negative width)
        _box(14, 1, 7, [70, 10, 5, 5]),  # wholly outside
        _box(15, 1, 7, [50, 40, 30, 30]),  # partly outside: clipped
        _box(16, 1, 7, "nope"),  # not a box
        _box(17, 2, 7, [1, 1, 5, 5]),  # its picture is corrupt
    ]
    json_path = write_coco(tmp_path, "train", images, annotations, CATEGORIES)
    (tmp_path / "train" / "0002.jpg").write_bytes(b"garbage")
    (tmp_path / "train" / "0003.jpg").unlink()
    write_picture(tmp_path / "train" / "0004.jpg", 64, 48)  # not the size the JSON says
    dataset, caught = _load(tmp_path, "train")
    assert len(caught) == 1
    messages = [str(p) for p in dataset.problems.problems]
    expected = [
        "annotation id 10: unknown category id 42 (dropped box)",
        "annotation id 11 points at image id 99, which is not listed in 'images' (skipped annotation)",
        "annotation id 12 (image 1) box (1, 1, 1, 6) has zero size (dropped box)",
        "annotation id 13 (image 1) box (10, 10, 5, 15) is inverted",
        "annotation id 14 (image 1) box (70, 10, 75, 15) lies outside the 64x48 picture (dropped box)",
        "annotation id 15 (image 1) box (50, 40, 80, 70) extends outside the 64x48 picture (clipped box)",
        "annotation id 16: 'bbox' is not four numbers (nope) (dropped box)",
        "0002.jpg: not a picture",
        "0003.jpg: picture listed in instances_train.json is missing (skipped picture)",
        "image id 4 says 32x48 but",
    ]
    for text in expected:
        assert any(text in message for message in messages), (text, messages)
    assert all(str(json_path) in m for m in messages if "annotation id" in m)
    assert [r.image_id for r in dataset.records] == [1, 4], "a wrongly stated size is corrected, not skipped"
    assert dataset.records[0].boxes.tolist() == [[50, 40, 64, 48]]
    assert dataset.records[1].width == 64
    with pytest.raises(DatasetError, match="problem"):
        build_dataset(tmp_path, "train", strict=True)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"annotations": []}', "no 'images' list"),
        ('{"images": [], "categories": []}', "no 'categories'"),
        ('{"images": [], "categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}', "unique integers"),
    ],
)
def test_broken_json_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "instances_train.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        build_dataset(path, "train")


def test_coco_mini_counts_crowd_and_sparse_ids():
    root = shared_path(COCO_MINI)
    crowd = {}
    for split, pictures, boxes in (("train", 80, 739), ("val", 79, 624)):
        dataset, caught = _load(root, split)
        assert caught == []
        assert len(dataset) == pictures
        assert sum(len(r.boxes) for r in dataset.records) == boxes
        assert len(dataset.class_names) == 80 and dataset.num_classes == 81
        assert dataset.class_names[0] == "person" and dataset.class_names[-1] == "toothbrush"
        assert dataset.label_to_category_id[80] == 90 and dataset.label_to_category_id[12] == 13
        crowd[split] = sum(int(r.iscrowd.sum()) for r in dataset.records)
    assert crowd == {"train": 8, "val": 5}


def test_export_keeps_category_ids_crowd_and_every_box(tmp_path):
    dataset, _ = _load(shared_path(COCO_MINI), "val")
    exported = export_coco(dataset, tmp_path / "val.json", image_root=COCO_MINI / "val2017")
    assert {c["id"] for c in exported["categories"]} == set(dataset.label_to_category_id.values())
    again, _ = _load(tmp_path / "val.json", "all", image_root=COCO_MINI / "val2017")
    assert again.class_names == dataset.class_names
    assert again.label_to_category_id == dataset.label_to_category_id
    for before, after in zip(dataset.targets, again.targets, strict=True):
        assert after["image_id"] == before["image_id"] and after["file_name"] == before["file_name"]
        assert torch.allclose(after["boxes"], before["boxes"], atol=1e-3)
        assert torch.equal(after["labels"], before["labels"]) and torch.equal(
            after["iscrowd"], before["iscrowd"]
        )


def test_voc_to_coco_round_trip_keeps_difficult(tmp_path):
    root = write_voc(tmp_path / "voc", {"1": [("b", 1, 2, 30, 40, 1), ("a", 3, 3, 9, 9)], "2": []})
    voc, _ = _load(root)
    export_coco(voc, tmp_path / "out" / "voc.json")
    data = json.loads((tmp_path / "out" / "voc.json").read_text())
    assert data["images"][0]["file_name"] == "../voc/JPEGImages/1.jpg"
    with pytest.warns(DataWarning, match="leaves the pictures folder"):  # never read outside it unasked
        assert len(build_dataset(tmp_path / "out" / "voc.json", "all")) == 0
    export_coco(voc, tmp_path / "out" / "voc.json", image_root=root / "JPEGImages")
    coco, _ = _load(tmp_path / "out" / "voc.json", "all", image_root=root / "JPEGImages")
    assert coco.class_names == ["a", "b"]
    assert [t["boxes"].tolist() for t in coco.targets] == [[[1, 2, 30, 40], [3, 3, 9, 9]], []]
    assert coco.get_target(0)["difficult"].tolist() == [True, False]
    assert torch.equal(coco[0][0], voc[0][0])


def test_bccd_voc_to_coco_round_trip_keeps_every_box(tmp_path):
    voc, _ = _load(shared_path(BCCD), "trainval")
    export_coco(voc, tmp_path / "bccd.json", image_root=BCCD / "JPEGImages")
    coco, _ = _load(tmp_path / "bccd.json", "all", image_root=BCCD / "JPEGImages")
    assert len(coco) == len(voc) == 292
    assert sum(len(t["boxes"]) for t in coco.targets) == sum(len(t["boxes"]) for t in voc.targets) == 3941
    for before, after in zip(voc.targets, coco.targets, strict=True):
        assert after["file_name"] == before["file_name"] and after["image_id"] == before["image_id"]
        assert torch.equal(after["boxes"], before["boxes"]) and torch.equal(after["labels"], before["labels"])


def test_a_missing_early_picture_does_not_send_the_others_elsewhere(tmp_path):
    # CVAT's layout: annotations/instances_default.json and images/; the first listed picture is missing.
    images = [_image(i) for i in range(1, 8)]
    json_path = write_coco(tmp_path, "default", images, [_box(1, 3, 7, [1, 1, 5, 5])], CATEGORIES, False)
    for image in images[1:]:
        write_picture(tmp_path / "images" / image["file_name"])
    dataset, caught = _load(json_path.parent.parent, "all")
    assert len(dataset) == 6 and all(r.path.parent == tmp_path / "images" for r in dataset.records)
    assert "0001.jpg: picture listed in instances_default.json is missing" in str(caught[0].message)


def test_roboflows_project_category_is_not_a_class(tmp_path):
    categories = [
        {"id": 0, "name": "cells", "supercategory": "none"},
        {"id": 1, "name": "RBC", "supercategory": "cells"},
        {"id": 2, "name": "WBC", "supercategory": "cells"},
    ]
    json_path = write_coco(tmp_path, "train", [_image(1)], [_box(1, 1, 2, [1, 1, 5, 5])], categories)
    dataset = load_coco(json_path)
    assert dataset.class_names == ["RBC", "WBC"] and dataset.label_to_category_id == {1: 1, 2: 2}
    assert dataset.records[0].labels.tolist() == [2]
