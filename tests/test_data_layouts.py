"""Every dataset layout users bring, recognised without flags: the seed's exact command trains on each, and
`ssd eval --weights ssd.pt --datapath X` with no other flag evaluates the split the run validated on."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
from conftest import BCCD, COCO_MINI, SHARED, shared_path
from data_writers import voc_xml, write_picture

from ssd.cli.main import main
from ssd.data import DataWarning, available_splits, build_dataset, detect_format, is_automatically_split
from ssd.data.splits import resolve_split, split_role
from ssd.errors import DatasetError
from ssd.models.checkpoint import read_checkpoint

NAMES = ["platelet", "red cell"]  # alphabetical: VOC sorts the names it finds
SEED_COMMAND = (
    "--arch mobilenetv3_ssd --datapath dataset_coco --epochs 10 --batch-size 5 --lr 0.001 --save ssd.pt"
)


def _objects(index: int) -> list[tuple[str, int, int, int, int]]:
    """Two boxes per 64x48 picture, moved a little from picture to picture."""
    index %= 8
    return [(NAMES[0], 4 + index, 6, 30 + index, 34), (NAMES[1], 36, 10 + index, 58, 30 + index)]


def _stems(split: str, count: int) -> list[tuple[str, int]]:
    return [(f"{split}_{i:03d}", i) for i in range(count)]


# --- COCO ----------------------------------------------------------------------------------------------


def _coco_json(path: Path, stems: list[tuple[str, int]], suffix: str = ".jpg", category_ids=(3, 7)) -> None:
    images, annotations = [], []
    for image_id, (stem, index) in enumerate(stems, start=1):
        images.append({"id": image_id, "file_name": stem + suffix, "width": 64, "height": 48})
        for name, x1, y1, x2, y2 in _objects(index):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_ids[NAMES.index(name)],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": n} for i, n in zip(category_ids, NAMES, strict=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def _write_pictures(folder: Path, stems: list[tuple[str, int]], suffix: str = ".jpg") -> None:
    for stem, _ in stems:
        write_picture(folder / (stem + suffix))


def coco_official(root: Path) -> None:
    """COCO as it ships: annotations/instances_train2017.json, train2017/, val2017/."""
    for split, count in (("train2017", 6), ("val2017", 2)):
        stems = _stems(split, count)
        _coco_json(root / "annotations" / f"instances_{split}.json", stems)
        _write_pictures(root / split, stems)


def coco_images_folder(root: Path) -> None:
    """annotations/instances_<split>.json with pictures in images/<split>/, split names without a year."""
    for split, count in (("train", 6), ("val", 2)):
        stems = _stems(split, count)
        _coco_json(root / "annotations" / f"instances_{split}.json", stems)
        _write_pictures(root / "images" / split, stems)


def coco_roboflow(root: Path) -> None:
    """Roboflow's COCO export: <split>/_annotations.coco.json beside its pictures; valid, not val."""
    for split, count in (("train", 6), ("valid", 2), ("test", 2)):
        stems = _stems(split, count)
        _coco_json(root / split / "_annotations.coco.json", stems, category_ids=(1, 2))
        _write_pictures(root / split, stems)


def coco_single_json(root: Path) -> None:
    """One COCO JSON (Label Studio's result.json) with its pictures in images/, no splits."""
    stems = _stems("photo", 8)
    _coco_json(root / "result.json", stems, suffix=".PNG")
    _write_pictures(root / "images", stems, suffix=".PNG")


def coco_cvat(root: Path) -> None:
    """CVAT's COCO export: annotations/instances_default.json and images/; 'default' is not a split."""
    stems = _stems("frame", 8)
    _coco_json(root / "annotations" / "instances_default.json", stems)
    _write_pictures(root / "images", stems)


# --- Pascal VOC ----------------------------------------------------------------------------------------


def _voc_pair(xml_folder: Path, picture_folder: Path, stem: str, index: int, suffix: str = ".jpg") -> None:
    write_picture(picture_folder / (stem + suffix))
    xml_folder.mkdir(parents=True, exist_ok=True)
    (xml_folder / f"{stem}.xml").write_text(voc_xml(stem + suffix, 64, 48, _objects(index)))


def voc_image_sets(root: Path) -> None:
    """Pascal VOC itself: Annotations/, JPEGImages/, ImageSets/Main/{train,val}.txt."""
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for split, count in (("train", 6), ("val", 2)):
        stems = _stems(split, count)
        for stem, index in stems:
            _voc_pair(root / "Annotations", root / "JPEGImages", stem, index)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(s for s, _ in stems) + "\n")


def voc_without_image_sets(root: Path) -> None:
    for stem, index in _stems("img", 8):
        _voc_pair(root / "Annotations", root / "JPEGImages", stem, index)


def voc_lower_case(root: Path) -> None:
    """annotations/ + images/ in lower case, pictures ending in .jpeg."""
    for stem, index in _stems("img", 8):
        _voc_pair(root / "annotations", root / "images", stem, index, suffix=".jpeg")


def labelimg_flat(root: Path) -> None:
    """LabelImg's own: each picture's XML beside it in one folder, as the camera named it (.JPG)."""
    for stem, index in _stems("DSC", 8):
        _voc_pair(root, root, stem, index, suffix=".JPG")


def labelimg_split_folders(root: Path) -> None:
    """LabelImg's XMLs beside their pictures, one folder per split."""
    for split, count in (("train", 6), ("test", 2)):
        for stem, index in _stems(split, count):
            _voc_pair(root / split, root / split, stem, index)


# --- YOLO ----------------------------------------------------------------------------------------------


def _yolo_label(index: int) -> str:
    lines = []
    for name, x1, y1, x2, y2 in _objects(index):
        cx, cy, w, h = (x1 + x2) / 128, (y1 + y2) / 96, (x2 - x1) / 64, (y2 - y1) / 48
        lines.append(f"{NAMES.index(name)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return "\n".join(lines) + "\n"


def _yolo_pair(pictures: Path, labels: Path, stem: str, index: int, suffix: str = ".jpg") -> None:
    write_picture(pictures / (stem + suffix))
    labels.mkdir(parents=True, exist_ok=True)
    (labels / f"{stem}.txt").write_text(_yolo_label(index))


def yolo_ultralytics_absolute_path(root: Path) -> None:
    """Ultralytics: images/<split>/, labels/<split>/, data.yaml with an absolute `path:`."""
    for split, count in (("train", 6), ("val", 2)):
        for stem, index in _stems(split, count):
            _yolo_pair(root / "images" / split, root / "labels" / split, stem, index)
    (root / "data.yaml").write_text(
        f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n  0: {NAMES[0]}\n  1: {NAMES[1]}\n"
    )


def yolo_roboflow(root: Path) -> None:
    """Roboflow's YOLOv8 export: <split>/images, <split>/labels, data.yaml with ../train/images."""
    for split, count in (("train", 6), ("valid", 2), ("test", 2)):
        for stem, index in _stems(split, count):
            _yolo_pair(root / split / "images", root / split / "labels", stem, index, suffix=".webp")
    (root / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n"
        f"nc: 2\nnames: ['{NAMES[0]}', '{NAMES[1]}']\n"
    )


def yolo_path_under_yaml(root: Path) -> None:
    """A data.yaml whose `path:` is a subfolder, relative to the YAML."""
    for split, count in (("train", 6), ("val", 2)):
        for stem, index in _stems(split, count):
            _yolo_pair(root / "data" / "images" / split, root / "data" / "labels" / split, stem, index)
    (root / "dataset.yaml").write_text(
        f"path: data\ntrain: images/train\nval: images/val\nnames: ['{NAMES[0]}', '{NAMES[1]}']\n"
    )


def yolo_flat_classes_txt(root: Path) -> None:
    """images/ + labels/ without splits, class names in classes.txt, pictures as .bmp."""
    for stem, index in _stems("shot", 8):
        _yolo_pair(root / "images", root / "labels", stem, index, suffix=".bmp")
    (root / "classes.txt").write_text("\n".join(NAMES) + "\n")


def yolo_labelimg(root: Path) -> None:
    """LabelImg's YOLO mode: each picture's .txt beside it, classes.txt in the same folder."""
    for stem, index in _stems("shot", 8):
        _yolo_pair(root, root, stem, index, suffix=".png")
    (root / "classes.txt").write_text("\n".join(NAMES) + "\n")


# (writer, format, the splits a user can name, the split training takes, the split it validates on)
LAYOUTS = {
    "coco_official": (coco_official, "coco", ["train2017", "val2017"], "train2017", "val2017"),
    "coco_images_folder": (coco_images_folder, "coco", ["train", "val"], "train", "val"),
    "coco_roboflow": (coco_roboflow, "coco", ["test", "train", "valid"], "train", "valid"),
    "coco_single_json": (coco_single_json, "coco", ["train", "val"], "train", "val"),
    "coco_cvat": (coco_cvat, "coco", ["train", "val"], "train", "val"),
    "voc_image_sets": (voc_image_sets, "voc", ["train", "val"], "train", "val"),
    "voc_without_image_sets": (voc_without_image_sets, "voc", ["train", "val"], "train", "val"),
    "voc_lower_case": (voc_lower_case, "voc", ["train", "val"], "train", "val"),
    "labelimg_flat": (labelimg_flat, "voc", ["train", "val"], "train", "val"),
    "labelimg_split_folders": (labelimg_split_folders, "voc", ["test", "train"], "train", "test"),
    "yolo_ultralytics_absolute_path": (
        yolo_ultralytics_absolute_path,
        "yolo",
        ["train", "val"],
        "train",
        "val",
    ),
    "yolo_roboflow": (yolo_roboflow, "yolo", ["train", "val", "test"], "train", "val"),
    "yolo_path_under_yaml": (yolo_path_under_yaml, "yolo", ["train", "val"], "train", "val"),
    "yolo_flat_classes_txt": (yolo_flat_classes_txt, "yolo", ["train", "val"], "train", "val"),
    "yolo_labelimg": (yolo_labelimg, "yolo", ["train", "val"], "train", "val"),
}
UNSPLIT = {"coco_single_json", "coco_cvat", "voc_without_image_sets", "voc_lower_case", "labelimg_flat"}
UNSPLIT |= {"yolo_flat_classes_txt", "yolo_labelimg"}


def _layout(tmp_path: Path, name: str) -> Path:
    root = tmp_path / "dataset_coco"
    root.mkdir()
    LAYOUTS[name][0](root)
    return root


def _quietly(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # a clean dataset must load without a word
        return function(*args, **kwargs)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_each_layout_is_recognised_with_its_splits_boxes_and_names(tmp_path, name):
    _, fmt, splits, train, val = LAYOUTS[name]
    root = _layout(tmp_path, name)
    assert detect_format(root) == (fmt, root)
    assert available_splits(root) == splits
    assert is_automatically_split(root) == (name in UNSPLIT)
    train_set = _quietly(build_dataset, root, train)
    val_set = _quietly(build_dataset, root, val)
    assert train_set.class_names == val_set.class_names == NAMES
    assert (
        len(train_set) == 6 and len(val_set) == 2
        if name not in UNSPLIT
        else len(train_set) + len(val_set) == 8
    )
    assert {r.path for r in train_set.records}.isdisjoint(r.path for r in val_set.records)
    for record in train_set.records + val_set.records:
        assert (record.width, record.height) == (64, 48) and len(record.boxes) == 2
        assert record.labels.tolist() == [1, 2]
    picture, target = train_set[0]
    assert picture.shape == (3, 48, 64)
    index = int(
        Path(target["file_name"]).stem.rsplit("_", 1)[-1].removeprefix("DSC").removeprefix("shot") or 0
    )
    assert target["boxes"].tolist()[0] == pytest.approx(list(_objects(index)[0][1:]), abs=1e-3)


def test_split_names_are_matched_by_meaning():
    names = ["train2017", "val2017", "test-dev2017"]
    assert resolve_split("train", names, "x") == "train2017"
    assert resolve_split("val", names, "x") == "val2017"
    assert resolve_split("validation", ["valid", "train"], "x") == "valid"
    assert resolve_split("test", names, "x") == "test-dev2017"
    assert resolve_split("dev", ["dev", "train"], "x") == "dev"
    assert resolve_split("train", ["train", "trainval", "val"], "x") == "train"
    assert resolve_split("train", ["trainval", "test"], "x") == "trainval"
    assert [split_role(n) for n in ("Training", "VALID", "test2017", "default")] == [
        "training",
        "validation",
        "test",
        None,
    ]
    with pytest.raises(DatasetError, match="could be any of train2014, train2017"):
        resolve_split("train", ["train2014", "train2017", "val2017"], "x")
    with pytest.raises(DatasetError, match="no split 'val' \\(splits found: train, test\\)"):
        resolve_split("val", ["train", "test"], "x")


def test_the_automatic_split_is_fixed_by_the_names_and_keeps_pictures_in_place(tmp_path):
    root = tmp_path / "flat"
    for stem, index in _stems("p", 40):
        _voc_pair(root, root, stem, index)
    val = {r.file_name for r in build_dataset(root, "val").records}
    assert 1 <= len(val) <= 10, "about a tenth of 40 pictures"
    assert {r.file_name for r in build_dataset(root, "val").records} == val, "the same on every call"
    train = {r.file_name for r in build_dataset(root, "train").records}
    assert len(train) + len(val) == 40 and train.isdisjoint(val)
    assert len(build_dataset(root, "all")) == 40
    assert len(val) < len(build_dataset(root, "val", val_fraction=0.5)) < 40
    for stem, index in _stems("q", 60):  # more pictures: none of the old ones changes sides
        _voc_pair(root, root, stem, index)
    again = {r.file_name for r in build_dataset(root, "val").records}
    assert {n for n in again if n.startswith("p_")} == val
    assert {n for n in again if n.startswith("q_")}, "new pictures go to validation too"
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    assert {r.file_name for r in build_dataset(moved, "val").records} == again, "wherever the folder is"


def _run_seed_command_then_eval(root: Path, monkeypatch, capsys) -> tuple[str, str]:
    monkeypatch.chdir(root.parent)
    assert root.name == "dataset_coco"
    assert main(["train", *SEED_COMMAND.split(), "--quiet"]) == 0  # what train_ssd.py runs
    trained = capsys.readouterr().out
    assert main(["eval", "--weights", "ssd.pt", "--datapath", "dataset_coco"]) == 0
    return trained, capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_seed_command_then_eval_on_each_layout(tmp_path, monkeypatch, capsys, name):
    _, _, _, train, val = LAYOUTS[name]
    root = _layout(tmp_path, name)
    trained, evaluated = _run_seed_command_then_eval(root, monkeypatch, capsys)
    assert f"('{train}': " in trained and "epoch 10/10" in trained and "final checkpoint: ssd.pt" in trained
    record = read_checkpoint(root.parent / "ssd.pt")["data"]
    assert (record["train_split"], record["val_split"]) == (train, val)
    assert record["automatic"] == (name in UNSPLIT)
    validated = 2
    if name in UNSPLIT:
        found = re.search(
            r"has no splits of its own: (\d+) pictures for training and (\d+) for validation", trained
        )
        assert found and int(found[1]) + int(found[2]) == 8, trained
        validated = int(found[2])
    assert f"evaluating split '{val}' of dataset_coco: the split ssd.pt validated on" in evaluated
    assert f"COCO metrics ({validated} pictures)" in evaluated
    logged = [line for line in trained.splitlines() if line.startswith("epoch 10/10")][0]
    assert "val mAP" in logged


def _trimmed_copy(source: Path, target: Path, keep: int) -> Path:
    """The real dataset's layout and files, with `keep` pictures per split, so the seed's 10 epochs stay
    short: VOC split files, COCO JSONs and YOLO folders are cut, everything else copied as it is."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.jpg", "*.png", "*.txt", "*.json"))
    for split_file in source.glob("ImageSets/Main/*.txt"):
        ids = split_file.read_text().split()[:keep]
        (target / split_file.relative_to(source)).write_text("\n".join(ids) + "\n")
        for image_id in ids:
            shutil.copy2(source / "JPEGImages" / f"{image_id}.jpg", target / "JPEGImages")
    for json_path in source.glob("annotations/*.json"):
        data = json.loads(json_path.read_text())
        data["images"] = data["images"][:keep]
        kept = {image["id"] for image in data["images"]}
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in kept]
        (target / json_path.relative_to(source)).write_text(json.dumps(data))
        folder = json_path.stem.removeprefix("instances_")
        for image in data["images"]:
            shutil.copy2(source / folder / image["file_name"], target / folder)
    for pictures in source.glob("*/images"):
        for picture in sorted(pictures.iterdir())[:keep]:
            shutil.copy2(picture, target / picture.relative_to(source))
            label = source / picture.parent.parent.name / "labels" / (picture.stem + ".txt")
            if label.exists():
                shutil.copy2(label, target / label.relative_to(source))
    for name in ("data.yaml", "classes.txt"):
        if (source / name).exists():
            shutil.copy2(source / name, target / name)
    return target


@pytest.mark.slow
@pytest.mark.parametrize(
    "source, train, val",
    [
        (BCCD, "train", "val"),
        (COCO_MINI, "train2017", "val2017"),
        (SHARED / "data" / "chess", "train", "val"),  # its data.yaml names the split "val"
    ],
    ids=["bccd_voc", "coco_mini", "chess_roboflow_yolo"],
)
def test_seed_command_then_eval_on_the_real_datasets(tmp_path, monkeypatch, capsys, source, train, val):
    root = _trimmed_copy(shared_path(source), tmp_path / "dataset_coco", keep=8)
    trained, evaluated = _run_seed_command_then_eval(root, monkeypatch, capsys)
    assert f"('{train}': 8 pictures" in trained and "epoch 10/10" in trained
    assert f"evaluating split '{val}' of dataset_coco: the split ssd.pt validated on" in evaluated
    assert "COCO metrics (8 pictures)" in evaluated


def test_the_automatic_split_is_the_same_however_the_paths_are_typed(tmp_path, monkeypatch):
    root = tmp_path / "data"
    stems = _stems("p", 30)
    _coco_json(root / "result.json", stems)
    _write_pictures(tmp_path / "elsewhere", stems)  # pictures outside the dataset folder
    monkeypatch.chdir(tmp_path)
    absolute = build_dataset(root, "val", image_root=tmp_path / "elsewhere")
    relative = build_dataset("data", "valid", image_root="elsewhere")  # "valid" means the automatic "val"
    assert [r.file_name for r in absolute.records] == [r.file_name for r in relative.records]
    assert len(absolute) >= 1
