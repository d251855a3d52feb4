"""COCO instances JSON: `annotations/instances_<split>.json` with pictures in `<split>/`, or a lone JSON.

Category ids (which may start at 0 or be sparse, like COCO's 1..90) become contiguous labels 1..K in order of
id; `label_to_category_id` maps back, for writing results in the JSON's own ids. Crowd regions keep their
`iscrowd` flag (training and evaluation ignore them, as pycocotools does); pictures without annotations stay
in the dataset, as negatives. An optional `difficult` field per annotation (written by `export_coco` for VOC
data) is kept too.
"""

from __future__ import annotations

import json
from pathlib import Path

from ssd.data.dataset import DetectionDataset, RawBox, Record, Transform, checked_picture_size, checked_record
from ssd.data.formats.base import DataFormat, LoadOptions
from ssd.data.problems import DROPPED_BOX, SKIPPED_ANNOTATION, SKIPPED_PICTURE, ProblemLog
from ssd.errors import DatasetError


def coco_json_for_split(root: Path, split: str) -> Path | None:
    """The annotation file of `split` under `root`: `annotations/instances_<split>*.json` (so "val" finds
    `instances_val2017.json`) or Roboflow's `<split>/_annotations.coco.json`."""
    annotations = root / "annotations"
    exact = annotations / f"instances_{split}.json"
    if exact.is_file():
        return exact
    prefixed = sorted(annotations.glob(f"instances_{split}*.json")) if annotations.is_dir() else []
    if len(prefixed) == 1:
        return prefixed[0]
    if len(prefixed) > 1:
        names = ", ".join(p.name for p in prefixed)
        raise DatasetError(
            f"{annotations}: split '{split}' matches several files ({names}); name one exactly"
        )
    roboflow = root / split / "_annotations.coco.json"
    return roboflow if roboflow.is_file() else None


def coco_splits(root: Path) -> list[str]:
    annotations = root / "annotations"
    found = [p.stem.removeprefix("instances_") for p in annotations.glob("instances_*.json")]
    found += [p.parent.name for p in root.glob("*/_annotations.coco.json")]
    return sorted(found)


def _read_json(json_path: Path) -> dict:
    try:
        with open(json_path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise DatasetError(f"{json_path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{json_path}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{json_path}: not a COCO instances file (no 'images' list)")
    if not isinstance(data.get("categories"), list) or not data["categories"]:
        raise DatasetError(f"{json_path}: no 'categories' list, so no class names")
    return data


def _image_root(json_path: Path, images: list[dict]) -> Path:
    """The folder the JSON's `file_name`s are relative to: the first candidate holding its first pictures."""
    stem = json_path.stem.removeprefix("instances_")
    here, parent = json_path.parent, json_path.parent.parent
    candidates = [
        parent / stem,
        parent / "images" / stem,
        here,
        here / stem,
        here / "images",
        parent / "images",
        parent,
    ]
    sample = [image.get("file_name", "") for image in images[:5]]
    for candidate in candidates:
        if sample and all((candidate / name).is_file() for name in sample if name):
            return candidate
    return candidates[0] if candidates[0].is_dir() else here


def _categories(data: dict, json_file: str) -> tuple[list[str], dict[int, int]]:
    ids = [category.get("id") for category in data["categories"]]
    if any(not isinstance(i, int) for i in ids) or len(set(ids)) != len(ids):
        raise DatasetError(f"{json_file}: category ids must be unique integers, found {ids}")
    ordered = sorted(data["categories"], key=lambda category: category["id"])
    names = [str(category.get("name", category["id"])) for category in ordered]
    return names, {label: category["id"] for label, category in enumerate(ordered, start=1)}


def load_coco(
    json_path: Path,
    *,
    image_root: Path | None = None,
    strict: bool = False,
    verify: str = "header",
    transform: Transform | None = None,
) -> DetectionDataset:
    json_path = Path(json_path)
    json_file = str(json_path)
    problems = ProblemLog(json_file, strict=strict)
    data = _read_json(json_path)
    names, label_to_category = _categories(data, json_file)
    label_of = {category: label for label, category in label_to_category.items()}
    root = Path(image_root) if image_root is not None else _image_root(json_path, data["images"])

    images: dict[int, dict] = {}
    for image in data["images"]:
        image_id = image.get("id")
        if not isinstance(image_id, int) or not image.get("file_name"):
            problems.add(
                json_file,
                f"image entry {str(image)[:80]} has no integer 'id' or no 'file_name'",
                SKIPPED_PICTURE,
            )
        elif image_id in images:
            problems.add(json_file, f"image id {image_id} is listed twice", SKIPPED_PICTURE)
        else:
            images[image_id] = image

    boxes_of: dict[int, list[RawBox]] = {image_id: [] for image_id in images}
    for annotation in data.get("annotations") or []:
        where = f"annotation id {annotation.get('id')}"
        image_id = annotation.get("image_id")
        if image_id not in boxes_of:
            problems.add(
                json_file,
                f"{where} points at image id {image_id}, which is not listed in 'images'",
                SKIPPED_ANNOTATION,
            )
            continue
        category = annotation.get("category_id")
        if category not in label_of:
            problems.add(json_file, f"{where}: unknown category id {category}", DROPPED_BOX)
            continue
        bbox = annotation.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
            problems.add(json_file, f"{where}: 'bbox' is not four numbers ({bbox})", DROPPED_BOX)
            continue
        x, y, w, h = (float(v) for v in bbox)
        area = annotation.get("area")
        boxes_of[image_id].append(
            RawBox(
                (x, y, x + w, y + h),
                label_of[category],
                f"{where} (image {image_id})",
                iscrowd=bool(annotation.get("iscrowd", 0)),
                difficult=bool(annotation.get("difficult", 0)),
                area=float(area) if isinstance(area, (int, float)) and area > 0 else None,
            )
        )

    records: list[Record] = []
    for image_id, image in images.items():
        path = root / image["file_name"]
        if not path.is_file():
            problems.add(str(path), f"picture listed in {json_path.name} is missing", SKIPPED_PICTURE)
            continue
        stated = (int(image.get("height") or 0), int(image.get("width") or 0))
        size = checked_picture_size(path, stated, verify, json_file, f"image id {image_id}", problems)
        if size is None:
            continue
        height, width = size
        records.append(
            checked_record(
                path, image["file_name"], image_id, height, width, boxes_of[image_id], json_file, problems
            )
        )
    problems.finish()
    return DetectionDataset(records, names, json_file, problems, transform, label_to_category)


def _recognises(path: Path, split: str) -> bool:
    if path.is_file():
        return path.suffix.lower() == ".json"
    return coco_json_for_split(path, split) is not None or bool(coco_splits(path))


def _splits(path: Path) -> list[str]:
    return [path.stem] if path.is_file() else coco_splits(path)


def _load(path: Path, split: str, options: LoadOptions) -> DetectionDataset:
    json_path = path if path.is_file() else coco_json_for_split(path, split)
    if json_path is None:
        known = ", ".join(coco_splits(path)) or "none"
        raise DatasetError(f"{path}: no annotations for split '{split}' (splits found: {known})")
    return load_coco(
        json_path,
        image_root=options.image_root,
        strict=options.strict,
        verify=options.verify,
        transform=options.transform,
    )


COCO = DataFormat(
    name="coco",
    layout="COCO (annotations/instances_<split>.json and <split>/, or a COCO JSON file)",
    recognises=_recognises,
    splits=_splits,
    load=_load,
)
