"""Any dataset as a COCO instances JSON: what pycocotools evaluates against, and a way to convert VOC or YOLO
data into the most widely read format.

Category ids are the dataset's own (`label_to_category_id`: COCO's original ids, else the labels 1..K), so a
COCO dataset exports to the ids it came with. `difficult` boxes carry `"difficult": 1`, a field pycocotools
ignores and `load_coco` reads back, so a VOC -> COCO -> VOC-like round trip loses nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ssd.data.dataset import DetectionDataset


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
        for box, label, crowd, difficult in zip(
            record.boxes.tolist(),
            record.labels.tolist(),
            record.iscrowd.tolist(),
            record.difficult.tolist(),
            strict=True,
        ):
            x1, y1, x2, y2 = box
            annotation = {
                "id": len(annotations) + 1,
                "image_id": record.image_id,
                "category_id": dataset.label_to_category_id[label],
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
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
