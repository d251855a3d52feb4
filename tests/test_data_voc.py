"""Pascal VOC loading: layout, flags, class names, every kind of bad data, and the BCCD dataset."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import BCCD, shared_path
from data_writers import write_picture, write_truncated_jpeg, write_voc

from ssd.data import DataWarning, build_dataset, detect_format
from ssd.errors import DatasetError


def _load(root, split="train", **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = build_dataset(root, split, **kwargs)
    return dataset, [w for w in caught if issubclass(w.category, DataWarning)]


def test_sample_follows_the_convention(tmp_path):
    root = write_voc(tmp_path / "voc", {"a_001": [("dog", 5, 6, 30, 40), ("cat", 1, 2, 10, 12, 1)]})
    dataset, caught = _load(root)
    assert caught == []
    assert dataset.class_names == ["cat", "dog"] and dataset.num_classes == 3
    image, target = dataset[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 48, 64)
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == [[5, 6, 30, 40], [1, 2, 10, 12]]
    assert target["labels"].tolist() == [2, 1] and target["labels"].dtype == torch.int64
    assert target["difficult"].tolist() == [False, True]
    assert target["iscrowd"].tolist() == [False, False]
    assert target["image_id"] == 1 and target["file_name"] == "a_001.jpg" and target["orig_size"] == (48, 64)
    assert dataset.get_target(0)["boxes"].tolist() == target["boxes"].tolist()


def test_class_names_are_the_same_for_every_split(tmp_path):
    root = write_voc(
        tmp_path / "voc",
        {"1": [("zebra", 1, 1, 9, 9)], "2": [("ant", 1, 1, 9, 9)]},
        splits={"train": ["1"], "val": ["2"]},
    )
    train, _ = _load(root, "train")
    val, _ = _load(root, "val")
    assert train.class_names == val.class_names == ["ant", "zebra"]
    assert train[0][1]["labels"].tolist() == [2] and val[0][1]["labels"].tolist() == [1]


def test_unknown_split_names_the_splits_found(tmp_path):
    root = write_voc(tmp_path / "voc", {"1": [("a", 1, 1, 9, 9)]})
    with pytest.raises(DatasetError, match="splits found: train"):
        build_dataset(root, "test")


def test_bad_boxes_are_dropped_with_one_warning_naming_each_file(tmp_path):
    root = write_voc(
        tmp_path / "voc",
        {
            "1": [("a", 10, 10, 10, 20)],  # zero width
            "2": [("a", 30, 10, 20, 20)],  # inverted
            "3": [("a", 100, 10, 120, 20)],  # wholly outside the 64x48 picture
            "4": [("a", -10, 5, 30, 60)],  # partly outside: clipped
            "5": [("b", 1, 1, 5, 5), ("a", 2, 2, 8, 8)],  # unknown class (names are given)
            "6": [("a", "x", 1, 5, 5)],  # not a number
        },
    )
    dataset, caught = _load(root, class_names=["a"])
    assert len(caught) == 1, "problems are reported once, counted"
    message = str(caught[0].message)
    assert "dropped boxes" in message and "clipped box" in message
    found = {(p.file.rsplit("/", 1)[-1], p.action): p.message for p in dataset.problems.problems}
    assert "zero size" in found[("1.xml", "dropped box")]
    assert "inverted" in found[("2.xml", "dropped box")]
    assert "outside the 64x48 picture" in found[("3.xml", "dropped box")]
    assert "extends outside" in found[("4.xml", "clipped box")]
    assert "unknown class name" in found[("5.xml", "dropped box")]
    assert "not numbers" in found[("6.xml", "dropped box")]
    by_id = {dataset.get_target(i)["file_name"]: dataset.get_target(i) for i in range(len(dataset))}
    assert len(dataset) == 6, "a picture whose boxes were all dropped stays, as a negative"
    assert by_id["4.jpg"]["boxes"].tolist() == [[0, 5, 30, 48]]
    assert by_id["5.jpg"]["labels"].tolist() == [1]
    assert len(by_id["1.jpg"]["boxes"]) == 0


def test_bad_pictures_and_files_are_skipped(tmp_path):
    root = write_voc(
        tmp_path / "voc",
        {str(i): [("a", 1, 1, 9, 9)] for i in range(1, 6)},
        splits={"train": ["1", "2", "3", "4", "5", "6"]},
    )
    (root / "JPEGImages" / "2.jpg").unlink()  # missing picture
    (root / "JPEGImages" / "3.jpg").write_bytes(b"not a picture at all")  # corrupt picture
    (root / "Annotations" / "4.xml").write_text("<annotation><size><width>64</width>")  # truncated XML
    write_picture(root / "JPEGImages" / "5.jpg", 32, 32)  # not the size its XML says: the picture wins
    dataset, caught = _load(root)
    assert len(dataset) == 2 and len(caught) == 1
    messages = {p.file.rsplit("/", 1)[-1]: p.message for p in dataset.problems.problems}
    assert "missing" in messages["2.jpg"]
    assert "not a picture" in messages["3.jpg"]
    assert "XML cannot be parsed" in messages["4.xml"]
    assert "64x48 but the picture is 32x32; the picture's size is used" in messages["5.xml"]
    assert "no such file" in messages["6.xml"]
    actions = {p.file.rsplit("/", 1)[-1]: p.action for p in dataset.problems.problems}
    assert actions.pop("5.xml") == "size corrected"
    assert set(actions.values()) == {"skipped picture"}
    assert [dataset.get_target(i)["orig_size"] for i in range(2)] == [(48, 64), (32, 32)]


def test_truncated_picture_is_found_by_decode_and_skipped_when_loading(tmp_path):
    root = write_voc(tmp_path / "voc", {"1": [("a", 1, 1, 9, 9)], "2": [("a", 2, 2, 9, 9)]})
    write_truncated_jpeg(root / "JPEGImages" / "1.jpg")
    dataset, caught = _load(root)  # the header is fine: found only when the picture is decoded
    assert len(dataset) == 2 and caught == []
    with pytest.warns(DataWarning, match="1.jpg: picture cannot be decoded"):
        image, target = dataset[0]
    assert target["file_name"] == "2.jpg", "the next readable picture stands in for the broken one"
    decoded, caught = _load(root, verify="decode")
    assert len(decoded) == 1 and "cannot be decoded" in decoded.problems.problems[0].message


def test_strict_refuses_the_dataset_up_front_listing_the_problems(tmp_path):
    root = write_voc(tmp_path / "voc", {"1": [("a", 1, 1, 1, 9)], "2": [("a", 1, 1, 9, 9)]})
    write_truncated_jpeg(root / "JPEGImages" / "2.jpg")
    with pytest.raises(DatasetError) as error:
        build_dataset(root, "train", strict=True)
    assert "2 problem(s)" in str(error.value)
    assert "1.xml" in str(error.value) and "zero size" in str(error.value)
    assert "2.jpg" in str(error.value) and "cannot be decoded" in str(error.value)


def test_xml_entities_are_refused(tmp_path):
    root = write_voc(tmp_path / "voc", {"1": [("a", 1, 1, 9, 9)], "2": [("a", 1, 1, 9, 9)]})
    (root / "Annotations" / "1.xml").write_text(
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "x">]><annotation><filename>&e;</filename></annotation>'
    )
    dataset, _ = _load(root)
    assert len(dataset) == 1
    assert "refused" in dataset.problems.problems[0].message


def test_a_folder_holding_the_dataset_folder_is_found(tmp_path):
    write_voc(tmp_path / "archive" / "VOC", {"1": [("a", 1, 1, 9, 9)]})
    assert detect_format(tmp_path / "archive") == ("voc", tmp_path / "archive" / "VOC")


def test_bccd_counts_and_its_two_zero_size_boxes():
    root = shared_path(BCCD)
    sizes = {"train": 205, "val": 87, "trainval": 292, "test": 72}
    total = 0
    dropped = []
    for split, pictures in sizes.items():
        dataset, caught = _load(root, split)
        assert len(dataset) == pictures
        assert dataset.class_names == ["Platelets", "RBC", "WBC"]
        if split != "trainval":
            total += sum(len(r.boxes) for r in dataset.records)
            dropped += [p for p in dataset.problems.problems if p.action == "dropped box"]
        assert len(caught) == (1 if dataset.problems.problems else 0)
    assert total + len(dropped) == 4888
    assert sorted(p.file.rsplit("/", 1)[-1] for p in dropped) == [
        "BloodImage_00338.xml",
        "BloodImage_00343.xml",
    ]
    assert all("zero size" in p.message for p in dropped)
    image, target = dataset[0]
    assert image.shape == (3, 480, 640) and target["orig_size"] == (480, 640)
