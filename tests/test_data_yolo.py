"""YOLO txt loading: both folder layouts, class names from data.yaml or classes.txt, and bad labels."""

from __future__ import annotations

import warnings

import pytest
import torch
from data_writers import write_picture, write_yolo

from ssd.data import DataWarning, build_dataset
from ssd.errors import DatasetError


def _load(root, split="train", **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = build_dataset(root, split, **kwargs)
    return dataset, [w for w in caught if issubclass(w.category, DataWarning)]


def test_boxes_are_converted_from_normalised_centres(tmp_path):
    root = write_yolo(
        tmp_path, "train", {"p1": "0 0.5 0.5 0.2 0.4\n1 0.1 0.1 0.2 0.2\n", "p2": None}, names=["cat", "dog"]
    )
    dataset, caught = _load(root)
    assert caught == []
    assert dataset.class_names == ["cat", "dog"] and dataset.num_classes == 3
    image, target = dataset[0]
    assert image.shape == (3, 50, 100) and image.dtype == torch.uint8
    assert torch.allclose(target["boxes"], torch.tensor([[40.0, 15.0, 60.0, 35.0], [0.0, 0.0, 20.0, 10.0]]))
    assert target["labels"].tolist() == [1, 2], "YOLO class c is label c + 1"
    assert target["file_name"] == "p1.jpg" and target["image_id"] == 1 and target["orig_size"] == (50, 100)
    assert len(dataset.get_target(1)["boxes"]) == 0, "a picture without a label file has no objects"


def test_roboflow_layout_valid_split_and_classes_txt(tmp_path):
    write_yolo(tmp_path, "valid", {"a": "0 0.5 0.5 0.5 0.5\n"}, layout="roboflow")
    (tmp_path / "classes.txt").write_text("thing\n")
    dataset, _ = _load(tmp_path, "val")
    assert dataset.class_names == ["thing"] and len(dataset) == 1


def test_names_as_a_mapping_and_polygon_lines(tmp_path):
    write_yolo(tmp_path, "train", {"a": "1 0.1 0.2 0.5 0.2 0.3 0.8\n"})
    (tmp_path / "data.yaml").write_text("names:\n  0: cat\n  1: dog\n")
    dataset, _ = _load(tmp_path)
    assert dataset.class_names == ["cat", "dog"]
    assert torch.allclose(dataset.get_target(0)["boxes"], torch.tensor([[10.0, 10.0, 50.0, 40.0]]))


def test_data_yaml_split_entries_are_followed(tmp_path):
    write_yolo(tmp_path / "elsewhere", "fold1", {"a": "0 0.5 0.5 0.5 0.5\n"})
    (tmp_path / "data.yaml").write_text("train: elsewhere/images/fold1\nnames: [x]\n")
    (tmp_path / "images").mkdir()
    dataset, _ = _load(tmp_path)
    assert len(dataset) == 1 and dataset.records[0].path.name == "a.jpg"


def test_bad_labels_are_dropped_and_named(tmp_path):
    labels = {
        "a": "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n",  # unknown class id 7
        "b": "0 0.5 nope 0.2 0.2\n",  # not numbers
        "c": "0 0.5 0.5 0.2\n",  # too few values
        "d": "0 0.5 0.5 0 0.2\n",  # zero size
        "e": "0 1.5 0.5 0.2 0.2\n",  # wholly outside
        "f": "0 0.95 0.5 0.2 0.2\n",  # partly outside: clipped
        "g": "0.5 0.5 0.5 0.2 0.2\n",  # class id not an integer
    }
    root = write_yolo(tmp_path, "train", labels, names=["thing"])
    (root / "labels" / "train" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # no picture
    (root / "images" / "train" / "z.jpg").write_bytes(b"broken")  # corrupt picture
    dataset, caught = _load(root)
    assert len(caught) == 1
    found = {p.file.rsplit("/", 1)[-1]: str(p) for p in dataset.problems.problems}
    assert "line 2: unknown class id 7 (the dataset has 1 classes, ids 0..0) (dropped box)" in found["a.txt"]
    assert "not numbers" in found["b.txt"]
    assert "has 4 values" in found["c.txt"]
    assert "zero size" in found["d.txt"]
    assert "lies outside the 100x50 picture" in found["e.txt"]
    assert "extends outside" in found["f.txt"]
    assert "unknown class id 0.5" in found["g.txt"]
    assert "label file has no picture (skipped annotation)" in found["orphan.txt"]
    assert "not a picture" in found["z.jpg"]
    targets = {t["file_name"]: t for t in dataset.targets}
    assert "z.jpg" not in targets and len(dataset) == 7
    assert targets["a.jpg"]["labels"].tolist() == [1]
    assert torch.allclose(targets["f.jpg"]["boxes"], torch.tensor([[85.0, 20.0, 100.0, 30.0]]))
    with pytest.raises(DatasetError, match="problem"):
        build_dataset(root, "train", strict=True)


def test_missing_names_and_missing_split_are_clear_errors(tmp_path):
    root = write_yolo(tmp_path, "train", {"a": ""}, names=["x"])
    with pytest.raises(DatasetError, match="no split 'test' \\(splits found: train\\)"):
        build_dataset(root, "test")
    (root / "data.yaml").write_text("nc: 3\n")
    with pytest.raises(DatasetError, match="no class names"):
        build_dataset(root, "train")


def test_labelimg_labels_beside_pictures_in_a_folder_called_images(tmp_path):
    root = tmp_path / "images" / "holiday"  # the user's own folder happens to be called images
    for stem in ("a", "b"):
        write_picture(root / f"{stem}.jpg", 100, 50)
        (root / f"{stem}.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    (root / "classes.txt").write_text("boat\n")
    dataset, caught = _load(root, "all")
    assert caught == [] and len(dataset) == 2
    assert all(len(record.boxes) == 1 for record in dataset.records)
