"""Any dataset as a COCO instances JSON: what pycocotools evaluates against, and a way to convert VOC or YOLO
data into the most widely read format.

Category ids are the dataset's own (`label_to_category_id`: COCO's original ids, else the labels 1..K), so a
COCO dataset exports to the ids it came with. `difficult` boxes carry `"difficult": 1`, a field pycocotools
ignores and `load_coco` reads back, so a VOC -> COCO -> VOC-like round trip loses nothing.

`write_coco` is the writer `ssd data convert --to coco` uses: `annotations/instances_<split>.json` with the
pictures copied into `<split>/`, the layout the COCO reader recognises.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from ssd.data.dataset import DetectionDataset
from ssd.data.writers.base import SplitWritten, Writer
from ssd.data.writers.files import copy_picture, unique_stem
from ssd.errors import DatasetError


def coco_dict(dataset: DetectionDataset, image_root: Path | None = None) -> dict:
    """The dataset as a COCO dict; `file_name`s relative to `image_root` (default: the dataset's own)."""
    images, annotations = [], []
    for record in dataset.records:
        file_name = record.file_name
        if image_root is not None:
            file_name = Path(
                os.path.relpath(Path(record.path).resolve(), Path(image_root).resolve())
            ).as_posix()
        images.append(
            {"id": record.image_id, "file_name": file_name, "height": record.height, "width": record.width}
        )
        for box, label, crowd, difficult, area in zip(
            record.boxes.tolist(),
            record.labels.tolist(),
            record.iscrowd.tolist(),
            record.difficult.tolist(),
            record.area.tolist(),
            strict=True,
        ):
            x1, y1, x2, y2 = box
            annotation = {
                "id": len(annotations) + 1,
                "image_id": record.image_id,
                "category_id": dataset.label_to_category_id[label],
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": area,  # the annotation's own (a COCO mask's), which decides AP small/medium/large
                "iscrowd": int(crowd),
            }
            if difficult:
                annotation["difficult"] = 1
            annotations.append(annotation)
    categories = [
        {"id": dataset.label_to_category_id[label], "name": name, "supercategory": "object"}
        for label, name in enumerate(dataset.class_names, start=1)
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def export_coco(dataset: DetectionDataset, json_path: Path, image_root: Path | None = None) -> dict:
    """Write `dataset` to `json_path` as COCO; `file_name`s are made relative to `image_root` (default: the
    JSON's folder), so `load_coco(json_path, image_root=...)` finds the pictures where they are."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    data = coco_dict(dataset, image_root if image_root is not None else json_path.parent)
    temporary = json_path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(data))
    temporary.replace(json_path)  # never leave half a JSON behind
    return data


def write_coco(out: Path, splits: dict[str, DetectionDataset]) -> list[SplitWritten]:
    """Each split as `annotations/instances_<split>.json` with its pictures copied into `<split>/`."""
    if "annotations" in splits:
        raise DatasetError("split 'annotations' cannot be written as COCO: that folder holds the JSON files")
    written = []
    for split, dataset in splits.items():
        picture_dir = out / split
        taken: set[str] = set()
        records = []
        for record in dataset.records:
            # Pictures from several source folders may share a name; within one split folder they cannot.
            destination = picture_dir / (unique_stem(record.path.stem, taken) + record.path.suffix)
            copy_picture(record.path, destination)
            records.append(replace(record, path=destination, file_name=destination.name))
        if len({record.image_id for record in records}) != len(records):  # COCO needs one id per picture
            records = [replace(record, image_id=i) for i, record in enumerate(records, start=1)]
        copied = DetectionDataset(
            records,
            dataset.class_names,
            dataset.source,
            dataset.problems,
            label_to_category_id=dataset.label_to_category_id,
        )
        export_coco(copied, out / "annotations" / f"instances_{split}.json", image_root=picture_dir)
        written.append(SplitWritten(split, len(records), sum(len(record.boxes) for record in records)))
    return written


COCO_WRITER = Writer(
    name="coco",
    layout="annotations/instances_<split>.json and <split>/",
    write=write_coco,
)
