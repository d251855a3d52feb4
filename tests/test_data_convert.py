"""`ssd data convert`: any readable dataset written as COCO, VOC or YOLO keeps its boxes and class names."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from data_writers import voc_xml, write_coco
from PIL import Image

from ssd.cli.main import main
from ssd.data import available_splits, build_dataset, convert_dataset, detect_format
from ssd.data.pictures import read_picture
from ssd.errors import DatasetError, UserError

COCO_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_mini"

# Sparse ids whose order is not the names' alphabetical order, names with a space, an `&` and a `<`, and one
# class without any box: every one must come back, in this order.
CATEGORIES = [
    {"id": 3, "name": "zebra crossing"},
    {"id": 7, "name": "salt & pepper"},
    {"id": 42, "name": "apple"},
    {"id": 50, "name": "unused <tag>"},
]
CLASS_NAMES = [category["name"] for category in CATEGORIES]


def _coco_source(root: Path) -> Path:
    """Two splits, both with a `same.jpg` (of different sizes), one picture without boxes, a PNG, a crowd
    region and a difficult box."""
    train_images = [
        {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "b.png", "width": 80, "height": 60},
        {"id": 3, "file_name": "empty.jpg", "width": 40, "height": 30},
        {"id": 4, "file_name": "same.jpg", "width": 50, "height": 70},
    ]
    train_annotations = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1.25, 2.5, 20.5, 10.75], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [30, 5, 33.3, 40], "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 42, "bbox": [0, 0, 64, 48], "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 42, "bbox": [10, 10, 30, 20], "iscrowd": 1},
        {"id": 5, "image_id": 2, "category_id": 7, "bbox": [50.5, 40.5, 29.5, 19.5], "iscrowd": 0},
        {"id": 6, "image_id": 4, "category_id": 3, "bbox": [5, 6, 7, 8], "iscrowd": 0, "difficult": 1},
    ]
    val_images = [
        {"id": 10, "file_name": "same.jpg", "width": 90, "height": 33},
        {"id": 11, "file_name": "c.jpg", "width": 33, "height": 90},
    ]
    val_annotations = [
        {"id": 1, "image_id": 10, "category_id": 42, "bbox": [60.1, 3.3, 20, 20], "iscrowd": 0},
        {"id": 2, "image_id": 11, "category_id": 3, "bbox": [2, 70, 30, 19.9], "iscrowd": 0},
        {"id": 3, "image_id": 11, "category_id": 7, "bbox": [4, 4, 4, 4], "iscrowd": 0},
    ]
    write_coco(root, "train", train_images, train_annotations, CATEGORIES)
    write_coco(root, "val", val_images, val_annotations, CATEGORIES)
    return root


def _by_stem(dataset, split: str) -> dict:
    """Records by picture stem, without the split prefix VOC gives a name that another split uses too."""
    return {Path(r.file_name).stem.removeprefix(f"{split}_"): r for r in dataset.records}


def _assert_same_boxes(source, converted, split: str, without_crowd: bool = False):
    """Same pictures, sizes, labels and boxes (within 0.5 px), in order; `without_crowd`: as YOLO holds them."""
    before, after = _by_stem(source, split), _by_stem(converted, split)
    assert sorted(before) == sorted(after)
    for stem, record in before.items():
        other = after[stem]
        assert (other.width, other.height) == (record.width, record.height)
        kept = ~record.iscrowd if without_crowd else torch.ones(len(record.boxes), dtype=torch.bool)
        assert torch.equal(other.labels, record.labels[kept]), stem
        assert torch.allclose(other.boxes, record.boxes[kept], atol=0.5), stem


def test_coco_to_voc_to_yolo_to_coco_keeps_boxes_and_class_names(tmp_path):
    source_root = _coco_source(tmp_path / "coco")
    convert_dataset(source_root, "voc", tmp_path / "voc")
    convert_dataset(tmp_path / "voc", "yolo", tmp_path / "yolo")
    convert_dataset(tmp_path / "yolo", "coco", tmp_path / "back")
    assert detect_format(tmp_path / "back")[0] == "coco"
    assert available_splits(tmp_path / "back") == ["train", "val"]
    for split in ("train", "val"):
        source = build_dataset(source_root, split)
        for stage in ("voc", "yolo", "back"):
            assert build_dataset(tmp_path / stage, split).class_names == CLASS_NAMES, stage
        _assert_same_boxes(source, build_dataset(tmp_path / "voc", split), split)
        _assert_same_boxes(source, build_dataset(tmp_path / "yolo", split), split, without_crowd=True)
        _assert_same_boxes(source, build_dataset(tmp_path / "back", split), split, without_crowd=True)


def test_voc_output_layout_escapes_names_and_keeps_crowd_and_difficult(tmp_path):
    source_root = _coco_source(tmp_path / "coco")
    written = convert_dataset(source_root, "voc", tmp_path / "voc")
    assert [(w.split, w.pictures, w.boxes) for w in written] == [("train", 4, 6), ("val", 2, 3)]
    voc = tmp_path / "voc"
    # The two `same.jpg` are different pictures: the second one gets its split as a prefix.
    assert (voc / "ImageSets" / "Main" / "train.txt").read_text().split() == ["a", "b", "empty", "same"]
    assert (voc / "ImageSets" / "Main" / "val.txt").read_text().split() == ["val_same", "c"]
    assert (voc / "JPEGImages" / "b.png").read_bytes() == (source_root / "train" / "b.png").read_bytes()
    assert (voc / "classes.txt").read_text().splitlines() == CLASS_NAMES
    xml = (voc / "Annotations" / "a.xml").read_text()
    assert "<name>salt &amp; pepper</name>" in xml and "<xmin>1.25</xmin>" in xml
    assert "<width>64</width>" in xml and "<height>48</height>" in xml

    # COCO -> VOC -> COCO keeps the crowd region and the difficult flag.
    convert_dataset(voc, "coco", tmp_path / "back")
    for split in ("train", "val"):
        source, back = build_dataset(source_root, split), build_dataset(tmp_path / "back", split)
        _assert_same_boxes(source, back, split)
        for stem, record in _by_stem(source, split).items():
            assert torch.equal(_by_stem(back, split)[stem].iscrowd, record.iscrowd)
            assert torch.equal(_by_stem(back, split)[stem].difficult, record.difficult)
    assert build_dataset(tmp_path / "back", "train").records[1].iscrowd.tolist() == [True, False]


def test_yolo_output_layout_and_what_it_cannot_hold(tmp_path):
    written = convert_dataset(_coco_source(tmp_path / "coco"), "yolo", tmp_path / "yolo")
    train = written[0]
    assert (train.pictures, train.boxes) == (4, 5)
    assert train.notes == [
        "1 crowd regions left out (YOLO has no crowd regions)",
        "1 difficult boxes written as ordinary boxes (YOLO has no difficult flag)",
    ]
    config = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert config == {"train": "images/train", "val": "images/val", "nc": 4, "names": CLASS_NAMES}
    assert (tmp_path / "yolo" / "labels" / "train" / "empty.txt").read_text() == ""
    assert (tmp_path / "yolo" / "images" / "train" / "b.png").is_file()
    assert (tmp_path / "yolo" / "labels" / "val" / "same.txt").read_text().split()[0] == "2"  # label 3


def test_splits_with_different_categories_share_one_class_list(tmp_path):
    image = [{"id": 1, "file_name": "p.jpg", "width": 20, "height": 20}]
    box = {"id": 1, "image_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0}
    write_coco(
        tmp_path / "coco",
        "train",
        image,
        [{**box, "category_id": 7}],
        [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
    )
    write_coco(
        tmp_path / "coco",
        "val",
        image,
        [{**box, "category_id": 9}],
        [{"id": 7, "name": "b"}, {"id": 9, "name": "c"}],
    )
    convert_dataset(tmp_path / "coco", "yolo", tmp_path / "yolo")
    for split, name in (("train", "b"), ("val", "c")):
        dataset = build_dataset(tmp_path / "yolo", split)
        assert dataset.class_names == ["a", "b", "c"]
        assert dataset.class_names[dataset.records[0].labels.item() - 1] == name


def test_a_failed_conversion_leaves_nothing(tmp_path):
    root = tmp_path / "coco"
    image = [{"id": 1, "file_name": "p.jpg", "width": 20, "height": 20}]
    write_coco(root, "train", image, [], [{"id": 1, "name": "trailing "}])
    with pytest.raises(DatasetError, match="cannot be written as VOC"):
        convert_dataset(root, "voc", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco"]  # no OUT, no half-written folder beside it


def test_convert_command_end_to_end(tmp_path, capsys):
    source_root = _coco_source(tmp_path / "coco")
    out = tmp_path / "out"
    assert main(["data", "convert", str(source_root), "--to", "yolo", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "train: 4 pictures, 5 boxes written; 1 crowd regions left out (YOLO has no crowd regions); "
        "1 difficult boxes written as ordinary boxes (YOLO has no difficult flag)",
        "val: 2 pictures, 3 boxes written",
        f"wrote {out}: yolo dataset converted from {source_root}",
    ]
    assert detect_format(out)[0] == "yolo"

    # One split into a folder that exists but is empty.
    (tmp_path / "empty").mkdir()
    assert main(["data", "convert", str(out), "--to", "coco", str(tmp_path / "empty"), "--split", "val"]) == 0
    assert available_splits(tmp_path / "empty") == ["val"]
    assert json.loads((tmp_path / "empty" / "annotations" / "instances_val.json").read_text())["images"]
    capsys.readouterr()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--to", "labelme", "{out}"], "--to labelme: unknown output format; choose one of coco, voc, yolo"),
        (["--to", "voc", "{full}"], "already exists and is not an empty folder"),
        (["--to", "voc", "{src}/converted"], "overlaps the dataset"),
        (["--to", "voc", "{out}", "--split", "nope"], "nope"),
    ],
)
def test_convert_command_refusals_are_one_line(tmp_path, capsys, arguments, message):
    source_root = _coco_source(tmp_path / "coco")
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("a user's file")
    paths = {"out": tmp_path / "out", "full": full, "src": source_root}
    argv = ["data", "convert", str(source_root)] + [a.format(**paths) for a in arguments]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco", "full"]  # nothing written anywhere
    assert (full / "mine.txt").read_text() == "a user's file"


def test_synthetic_cannot_be_converted_directly(tmp_path):
    with pytest.raises(UserError, match="ssd data synthetic"):
        convert_dataset("synthetic", "coco", tmp_path / "out")


def test_coco_mini_converts_to_yolo_and_voc(tmp_path):
    if not COCO_MINI.exists():
        pytest.skip(f"{COCO_MINI} is absent (../shared is only on the project's machines)")
    yolo = convert_dataset(COCO_MINI, "yolo", tmp_path / "yolo")
    voc = convert_dataset(COCO_MINI, "voc", tmp_path / "voc")
    splits = available_splits(COCO_MINI)
    assert [w.split for w in yolo] == [w.split for w in voc] == splits
    for split, yolo_written, voc_written in zip(splits, yolo, voc, strict=True):
        source = build_dataset(COCO_MINI, split)
        boxes = sum(len(r.boxes) for r in source.records)
        crowd = sum(int(r.iscrowd.sum()) for r in source.records)
        assert crowd > 0 and (yolo_written.boxes, voc_written.boxes) == (boxes - crowd, boxes)
        for root, expected in ((tmp_path / "yolo", boxes - crowd), (tmp_path / "voc", boxes)):
            converted = build_dataset(root, split)
            assert converted.class_names == source.class_names
            assert len(converted) == len(source)
            assert sum(len(r.boxes) for r in converted.records) == expected


def test_boxes_drawn_on_the_stored_pixels_of_a_turned_picture_stay_on_their_object_in_yolo(tmp_path):
    source = tmp_path / "labelimg"
    source.mkdir()
    for i in range(2):
        stored = np.zeros((20, 40, 3), np.uint8)
        stored[2:8, 4:12] = (255, 0, 0)
        exif = Image.Exif()
        exif[274] = 6  # shown turned a quarter clockwise, 20 wide and 40 high
        Image.fromarray(stored).save(source / f"p{i}.png", exif=exif.tobytes())
        # The XML states the stored 40x20: it was drawn on the stored pixels, so it is read unturned.
        (source / f"p{i}.xml").write_text(voc_xml(f"p{i}.png", 40, 20, [("spot", 4, 2, 12, 8)]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        convert_dataset(source, "yolo", tmp_path / "yolo")
        converted = build_dataset(tmp_path / "yolo", "all")
    for record in converted.records:
        assert (record.width, record.height) == (20, 40) and record.orient
        shown = read_picture(record.path).permute(1, 2, 0).numpy()
        ys, xs = np.nonzero(shown[..., 0] > 200)
        assert record.boxes.tolist() == [
            pytest.approx([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], abs=0.01)
        ]


def test_yolo_data_yaml_keys_splits_by_their_role(tmp_path):
    source = tmp_path / "roboflow"
    for split in ("train", "valid", "test"):
        write_coco(
            source,
            split,
            [{"id": 1, "file_name": "p.jpg", "width": 20, "height": 20}],
            [],
            [{"id": 0, "name": "x"}],
        )
    convert_dataset(source, "yolo", tmp_path / "yolo")
    config = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert (config["train"], config["val"], config["test"]) == ("images/train", "images/valid", "images/test")
    assert available_splits(tmp_path / "yolo") == ["train", "val", "test"]
    assert len(build_dataset(tmp_path / "yolo", "val")) == 1
