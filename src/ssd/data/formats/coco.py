"""COCO instances JSON, in the layouts COCO and the tools that export it use:

- COCO itself: `annotations/instances_<split>.json` with pictures in `<split>/` or `images/<split>/`; split
  names with a year (`train2017`) or without; other JSON names in `annotations/` (`train.json`) when there is
  no `instances_*.json`;
- Roboflow's export: `<split>/_annotations.coco.json` beside its pictures (`train/`, `valid/`, `test/`);
- a single COCO JSON: given as the path, or the one COCO JSON in a folder, with its pictures beside it, in
  `images/`, or under `--image-root` (a dataset without splits).

Category ids (which may start at 0 or be sparse, like COCO's 1..90) become contiguous labels 1..K in order of
id; `label_to_category_id` maps back, for writing results in the JSON's own ids. Crowd regions keep their
`iscrowd` flag (training and evaluation ignore them, as pycocotools does); pictures without annotations stay
in the dataset, as negatives. An optional `difficult` field per annotation (written by `export_coco` for VOC
data) is kept too. A `file_name` that is absolute or climbs out of the pictures folder is refused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ssd.data.dataset import DetectionDataset, RawBox, Record, Transform, checked_picture_size, checked_record
from ssd.data.formats.base import DataFormat, LoadOptions
from ssd.data.paths import inside, is_file
from ssd.data.problems import DROPPED_BOX, SKIPPED_ANNOTATION, SKIPPED_PICTURE, WARNED, ProblemLog
from ssd.data.splits import WHOLE
from ssd.errors import DatasetError

ROBOFLOW_JSON = "_annotations.coco.json"


def _looks_like_coco(path: Path) -> bool:
    """Whether a JSON file found lying in a folder is a COCO file, from its first bytes (not its whole,
    which may be hundreds of MB): COCO files list their `images` and `categories` near the top."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(1 << 20)
    except OSError:
        return False
    return b'"images"' in start or b'"categories"' in start


def coco_jsons(root: Path) -> dict[str, Path]:
    """Split name -> annotation file, for every layout above."""
    found: dict[str, Path] = {}
    annotations = root / "annotations"
    if annotations.is_dir():
        instances = sorted(annotations.glob("instances_*.json"))
        others = [] if instances else sorted(annotations.glob("*.json"))
        for path in instances:
            found[path.stem.removeprefix("instances_")] = path
        for path in others:
            found[path.stem] = path
    for path in sorted(root.glob(f"*/{ROBOFLOW_JSON}")):
        found.setdefault(path.parent.name, path)
    if not found:
        lone = [p for p in sorted(root.glob("*.json")) if p.is_file() and _looks_like_coco(p)]
        found.update((p.stem, p) for p in lone)
    return found


def coco_json_for_split(root: Path, split: str) -> Path | None:
    """The annotation file of `split` under `root`."""
    return coco_jsons(root).get(split)


def coco_splits(root: Path) -> list[str]:
    return sorted(coco_jsons(root))


def _read_json(json_path: Path) -> dict:
    try:
        with open(json_path, "rb") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise DatasetError(f"{json_path}: no such file") from None
    except OSError as error:
        raise DatasetError(f"{json_path}: cannot be read ({error.strerror or error})") from None
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DatasetError(f"{json_path}: not valid JSON ({str(error)[:120]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{json_path}: not a COCO instances file (no 'images' list)")
    if not isinstance(data.get("categories"), list) or not data["categories"]:
        raise DatasetError(f"{json_path}: no 'categories' list, so no class names")
    return data


def _image_root(json_path: Path, file_names: list[str]) -> Path:
    """The folder the JSON's `file_name`s are relative to: the candidate holding most of its first pictures
    (the first such, in the order below), so that a few missing pictures do not send the rest elsewhere."""
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
    sample = [name for name in file_names[:20] if inside(here, name) is not None]
    found = [sum(is_file(candidate / name) for name in sample) for candidate in candidates]
    if sample and max(found) > 0:
        return candidates[found.index(max(found))]
    return candidates[0] if candidates[0].is_dir() else here


def _categories(data: dict, json_file: str) -> tuple[list[str], dict[int, int]]:
    categories = data["categories"]
    ids = [category.get("id") if isinstance(category, dict) else None for category in categories]
    if any(not isinstance(i, int) or isinstance(i, bool) for i in ids) or len(set(ids)) != len(ids):
        raise DatasetError(f"{json_file}: category ids must be unique integers, found {str(ids)[:200]}")
    ordered = sorted(categories, key=lambda category: category["id"])
    ordered = [category for category in ordered if not _is_parent_only(category, ordered, data)]
    names = [str(category.get("name", category["id"])) for category in ordered]
    return names, {label: category["id"] for label, category in enumerate(ordered, start=1)}


def _is_parent_only(category: dict, categories: list[dict], data: dict) -> bool:
    """Whether a category only groups others: Roboflow lists its project as category 0, the supercategory of
    every real class, with no box of its own. Kept as a class, it would be one the model can never see."""
    name = category.get("name")
    if not any(other is not category and other.get("supercategory") == name for other in categories):
        return False
    annotations = data.get("annotations")
    boxes = annotations if isinstance(annotations, list) else []
    return not any(isinstance(a, dict) and a.get("category_id") == category["id"] for a in boxes)


def _number(value: object) -> float | None:
    """A JSON number as a float (None for text, booleans, lists, ...)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float
        return math.inf


def load_coco(
    json_path: Path,
    *,
    image_root: Path | None = None,
    strict: bool = False,
    verify: str = "header",
    transform: Transform | None = None,
    max_pixels: int | None = None,
) -> DetectionDataset:
    json_path = Path(json_path)
    json_file = str(json_path)
    problems = ProblemLog(json_file, strict=strict)
    data = _read_json(json_path)
    names, label_to_category = _categories(data, json_file)
    label_of = {category: label for label, category in label_to_category.items()}

    images: dict[int, dict] = {}
    for image in data["images"]:
        image_id = image.get("id") if isinstance(image, dict) else None
        file_name = image.get("file_name") if isinstance(image, dict) else None
        if (
            not isinstance(image_id, int)
            or isinstance(image_id, bool)
            or not isinstance(file_name, str)
            or not file_name
        ):
            problems.add(
                json_file,
                f"image entry {str(image)[:80]} has no integer 'id' or no 'file_name'",
                SKIPPED_PICTURE,
            )
        elif image_id in images:
            problems.add(json_file, f"image id {image_id} is listed twice", SKIPPED_PICTURE)
        else:
            images[image_id] = image
    root = (
        Path(image_root)
        if image_root is not None
        else _image_root(json_path, [image["file_name"] for image in images.values()])
    )

    annotations = data.get("annotations")
    if not isinstance(annotations, list):
        problems.add(
            json_file,
            "has no 'annotations' list"
            + ("" if annotations is None else f" (found {type(annotations).__name__})")
            + f": its {len(images)} pictures are read as having no objects",
            WARNED,
        )
        annotations = []
    boxes_of: dict[int, list[RawBox]] = {image_id: [] for image_id in images}
    for annotation in annotations:
        if not isinstance(annotation, dict):
            problems.add(json_file, f"annotation {str(annotation)[:60]} is not an object", SKIPPED_ANNOTATION)
            continue
        where = f"annotation id {str(annotation.get('id'))[:40]}"
        image_id = annotation.get("image_id")
        if not isinstance(image_id, int) or image_id not in boxes_of:
            problems.add(
                json_file,
                f"{where} points at image id {str(image_id)[:40]}, which is not listed in 'images'",
                SKIPPED_ANNOTATION,
            )
            continue
        category = annotation.get("category_id")
        if not isinstance(category, int) or category not in label_of:
            problems.add(json_file, f"{where}: unknown category id {str(category)[:40]}", DROPPED_BOX)
            continue
        bbox = annotation.get("bbox")
        values = [_number(v) for v in bbox] if isinstance(bbox, list) else []
        if len(values) != 4 or any(v is None for v in values):
            problems.add(json_file, f"{where}: 'bbox' is not four numbers ({str(bbox)[:60]})", DROPPED_BOX)
            continue
        x, y, w, h = values
        area = _number(annotation.get("area"))
        boxes_of[image_id].append(
            RawBox(
                (x, y, x + w, y + h),
                label_of[category],
                f"{where} (image {image_id})",
                iscrowd=annotation.get("iscrowd") in (1, True),
                difficult=annotation.get("difficult") in (1, True),
                area=area if area is not None and math.isfinite(area) and area > 0 else None,
            )
        )

    records: list[Record] = []
    for image_id, image in images.items():
        path = inside(root, image["file_name"])
        if path is None:
            problems.add(
                json_file,
                f"image id {image_id}: file_name {image['file_name'][:80]!r} leaves the pictures folder {root}; refused",
                SKIPPED_PICTURE,
            )
            continue
        if not is_file(path):
            problems.add(str(path), f"picture listed in {json_path.name} is missing", SKIPPED_PICTURE)
            continue
        # One side without the other is reported as a size that is not one (None), and corrected.
        stated = (image.get("height"), image.get("width")) if "height" in image or "width" in image else None
        picture = checked_picture_size(
            path, stated, verify, json_file, f"image id {image_id}", problems, max_pixels
        )
        if picture is None:
            continue
        records.append(
            checked_record(
                path,
                image["file_name"],
                image_id,
                picture.height,
                picture.width,
                boxes_of[image_id],
                json_file,
                problems,
                picture.orient,
            )
        )
    problems.finish()
    return DetectionDataset(records, names, json_file, problems, transform, label_to_category, max_pixels)


def _recognises(path: Path, split: str) -> bool:
    if path.is_file():
        return path.suffix.lower() == ".json"
    return path.is_dir() and bool(coco_jsons(path))


def _splits(path: Path) -> list[str]:
    return [] if path.is_file() else coco_splits(path)


def _load(path: Path, split: str, options: LoadOptions) -> DetectionDataset:
    if path.is_file():
        json_path = path
    else:
        jsons = coco_jsons(path)
        json_path = jsons.get(split) or (
            next(iter(jsons.values())) if split == WHOLE and len(jsons) == 1 else None
        )
    if json_path is None:
        known = ", ".join(sorted(coco_jsons(path))) or "none"
        raise DatasetError(f"{path}: no annotations for split '{split}' (splits found: {known})")
    return load_coco(
        json_path,
        image_root=options.image_root,
        strict=options.strict,
        verify=options.verify,
        transform=options.transform,
        max_pixels=options.max_pixels,
    )


COCO = DataFormat(
    name="coco",
    layout=(
        "COCO (annotations/instances_<split>.json and <split>/ or images/<split>/, Roboflow's "
        "<split>/_annotations.coco.json, or one COCO JSON with its pictures)"
    ),
    recognises=_recognises,
    splits=_splits,
    load=_load,
)
