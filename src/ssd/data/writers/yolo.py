"""YOLO in the Ultralytics layout: `images/<split>/`, `labels/<split>/<stem>.txt`, `data.yaml`.

Each label line is `class cx cy w h` in 0..1 of the picture's size, with class = label - 1. Six decimals
keep every corner within 0.5 px of where it was for pictures up to 600,000 px a side: rounding moves a
corner by at most 0.75e-6 of the side (half a unit of the centre plus a quarter of the size). `data.yaml`
names each split's folder relative to itself under the key of its role (`val: images/valid`, no `path:`), so
the folder can be moved, and lists the class names in order with `nc`.

YOLO has no crowd regions and no difficult flag: crowd regions are left out (training on them as objects
would teach the model wrong boxes) and difficult boxes become ordinary boxes; the report counts both.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ssd.data.dataset import DetectionDataset, Record
from ssd.data.pictures import boxes_as_shown, picture_info
from ssd.data.splits import TEST, TRAINING, VALIDATION, split_role
from ssd.data.writers.base import SplitWritten, Writer
from ssd.data.writers.files import copy_picture, unique_stem, write_text_atomically


def label_lines(record: Record) -> tuple[list[str], int, int]:
    """The label file's lines of one picture, the crowd regions left out and the difficult boxes written."""
    lines, crowd_left_out, difficult_written = [], 0, 0
    boxes, width, height = record.boxes, record.width, record.height
    if not record.orient:
        # Annotated on the stored pixels, but YOLO readers turn the picture as its EXIF says: turn the boxes.
        info = picture_info(record.path)
        boxes = boxes_as_shown(boxes, info.orientation, record.width, record.height)
        width, height = info.width, info.height
    for box, label, crowd, difficult in zip(
        boxes.tolist(),
        record.labels.tolist(),
        record.iscrowd.tolist(),
        record.difficult.tolist(),
        strict=True,
    ):
        if crowd:
            crowd_left_out += 1
            continue
        difficult_written += int(difficult)
        x1, y1, x2, y2 = box
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        w, h = (x2 - x1) / width, (y2 - y1) / height
        lines.append(f"{label - 1} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines, crowd_left_out, difficult_written


def write_yolo(out: Path, splits: dict[str, DetectionDataset]) -> list[SplitWritten]:
    class_names = next(iter(splits.values())).class_names if splits else []
    written = []
    for split, dataset in splits.items():
        report = SplitWritten(split)
        crowd_left_out = difficult_written = 0
        taken: set[str] = set()  # one label file per stem, so stems are unique within the split
        for record in dataset.records:
            stem = unique_stem(record.path.stem, taken)
            copy_picture(record.path, out / "images" / split / (stem + record.path.suffix))
            lines, crowd, difficult = label_lines(record)
            # An empty label file says "no objects" as plainly as a missing one, and shows it was converted.
            write_text_atomically(out / "labels" / split / f"{stem}.txt", "".join(f"{ln}\n" for ln in lines))
            report.pictures += 1
            report.boxes += len(lines)
            crowd_left_out += crowd
            difficult_written += difficult
        if crowd_left_out:
            report.notes.append(f"{crowd_left_out} crowd regions left out (YOLO has no crowd regions)")
        if difficult_written:
            report.notes.append(
                f"{difficult_written} difficult boxes written as ordinary boxes (YOLO has no difficult flag)"
            )
        written.append(report)
    config = _split_keys(list(splits), written)
    config.update(nc=len(class_names), names=list(class_names))
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False)
    write_text_atomically(out / "data.yaml", text)
    return written


def _split_keys(splits: list[str], written: list[SplitWritten]) -> dict[str, str]:
    """data.yaml's split entries. YOLO readers (Ultralytics, ours) know only `train`, `val` and `test`, so
    each split is keyed by its role (`valid` -> `val:`, `train2017` -> `train:`); its folder keeps its name.
    A split without a role of its own is noted in its line: its folder is written, but data.yaml cannot
    name it."""
    keys = {TRAINING: "train", VALIDATION: "val", TEST: "test"}
    roles = [split_role(split) for split in splits]
    config = {}
    for split, role, report in zip(splits, roles, written, strict=True):
        if role is not None and roles.count(role) == 1:
            config[keys[role]] = f"images/{split}"
        else:
            report.notes.append(
                f"no train/val/test entry in data.yaml for it (its pictures are in images/{split})"
            )
    return config


YOLO_WRITER = Writer(
    name="yolo",
    layout="images/<split>/, labels/<split>/, data.yaml",
    write=write_yolo,
)
