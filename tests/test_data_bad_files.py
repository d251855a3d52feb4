"""Broken and hostile files in a dataset: `ssd data check` names each one and what is wrong with it, training
on the folder skips them and finishes, and `--strict` refuses the folder before training, listing them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from data_writers import voc_xml, write_bomb, write_picture
from PIL import Image

from ssd.cli.main import main
from ssd.data import DataWarning, build_dataset

TRAIN = ["--epochs", "1", "--batch-size", "2", "--input-size", "96", "--quiet", "--val-split", "none"]


def _yolo_with_bad_files(root: Path) -> Path:
    images, labels = root / "images" / "train", root / "labels" / "train"
    for i in range(4):
        write_picture(images / f"good{i}.jpg", 64, 48)
        labels.mkdir(parents=True, exist_ok=True)
        (labels / f"good{i}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    write_bomb(images / "bomb.png", 30000, 30000)
    (labels / "bomb.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    write_picture(images / "binary_label.jpg", 64, 48)
    (labels / "binary_label.txt").write_bytes(b"\x89\xff\xfe 0 0.5 0.5\x00\x81")
    grey16 = np.full((48, 64), 32768, np.uint16)  # mid-grey in 16 bits: must stay mid-grey, not white
    Image.fromarray(grey16).save(images / "grey16.png")
    (labels / "grey16.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text("train: images/train\nnames: [cell]\n")
    return root


def _coco_with_bad_files(root: Path) -> Path:
    images = [
        {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "../outside.jpg", "width": 64, "height": 48},
        {"id": 3, "file_name": "/etc/hostname", "width": 64, "height": 48},
        {"id": 4, "file_name": "b.jpg", "width": 640, "height": 480},  # not the picture's size
    ]
    boxes = [{"id": i, "image_id": i, "category_id": 1, "bbox": [2, 2, 20, 20]} for i in range(1, 5)]
    for name in ("a.jpg", "b.jpg"):
        write_picture(root / "train" / name, 64, 48)
    write_picture(root / "outside.jpg", 64, 48)  # exists, but outside the pictures folder
    (root / "annotations").mkdir(parents=True)
    categories = [{"id": 1, "name": "cell"}]
    train = {"images": images, "annotations": boxes, "categories": categories}
    (root / "annotations" / "instances_train.json").write_text(json.dumps(train))
    write_picture(root / "val" / "c.jpg", 64, 48)
    val = {"images": [{"id": 9, "file_name": "c.jpg", "width": 64, "height": 48}], "categories": categories}
    (root / "annotations" / "instances_val.json").write_text(json.dumps(val))  # no 'annotations' at all
    return root


def _voc_with_bad_files(root: Path) -> Path:
    for i in range(6):
        write_picture(root / f"p{i}.jpg", 64, 48)
        (root / f"p{i}.xml").write_text(voc_xml(f"p{i}.jpg", 64, 48, [("cell", 2, 2, 30, 30)]))
    (root / "p0.xml").write_text(voc_xml("p0.jpg", 0, -5, [("cell", 2, 2, 30, 30)]))  # <size> 0x-5
    (root / "p1.xml").write_text(voc_xml("p1.jpg", 32, 32, [("cell", 2, 2, 30, 30)]))  # says 32x32
    (root / "p2.xml").write_text(voc_xml("../../etc/passwd", 64, 48, [("cell", 2, 2, 30, 30)]))
    return root


@pytest.mark.parametrize(
    "writer, split, expected",
    [
        (
            _yolo_with_bad_files,
            "train",
            [
                "bomb.png: 30000x30000 is 900,000,000 pixels, more than the 89,478,485 allowed",
                "binary_label.txt: not a text file (it holds NUL bytes)",
            ],
        ),
        (
            _coco_with_bad_files,
            "train",
            [
                "image id 2: file_name '../outside.jpg' leaves the pictures folder",
                "image id 3: file_name '/etc/hostname' leaves the pictures folder",
                "image id 4 says 640x480 but the picture is 64x48; the picture's size is used",
            ],
        ),
        (
            _voc_with_bad_files,
            "all",
            [
                "p0.xml: <size> says 0x-5, which is not a picture size; the picture's 64x48 is used",
                "p1.xml: <size> says 32x32 but the picture is 64x48; the picture's size is used",
                "p2.xml: <filename> '../../etc/passwd' leaves the pictures folder; refused",
            ],
        ),
    ],
    ids=["yolo", "coco", "voc"],
)
def test_check_names_every_bad_file_training_finishes_and_strict_refuses(
    tmp_path, capsys, monkeypatch, writer, split, expected
):
    root = writer(tmp_path / "data")
    assert main(["data", "check", str(root)]) == 0
    report = capsys.readouterr().out
    for text in expected:
        assert text in report, (text, report)
    assert "Traceback" not in report

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--datapath", str(root), *TRAIN]) == 0
    assert "done in" in capsys.readouterr().out

    assert main(["train", "--datapath", str(root), *TRAIN, "--strict"]) == 2
    refused = capsys.readouterr()
    assert "--strict is set" in refused.err and "epoch 1/1" not in refused.out
    for text in expected[:1]:
        assert text in refused.err, refused.err


def test_converted_pictures_keep_their_brightness_and_the_other_pictures_train(tmp_path):
    root = _yolo_with_bad_files(tmp_path / "data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        dataset = build_dataset(root, "train")
    names = [r.path.name for r in dataset.records]
    assert sorted(names) == ["good0.jpg", "good1.jpg", "good2.jpg", "good3.jpg", "grey16.png"]
    grey = dataset[names.index("grey16.png")][0]
    assert 126 <= float(grey.float().mean()) <= 130


def test_a_coco_json_without_annotations_is_warned_about(tmp_path):
    root = _coco_with_bad_files(tmp_path / "data")
    with pytest.warns(
        DataWarning, match="has no 'annotations' list: its 1 pictures are read as having no objects"
    ):
        dataset = build_dataset(root, "val")
    assert len(dataset) == 1 and len(dataset.records[0].boxes) == 0
