"""YOLO txt: one `labels/.../<name>.txt` per picture in `images/.../<name>.<ext>`, each line
`class cx cy w h` in 0..1 of the picture's size; class names from `data.yaml` (`names`) or `classes.txt`.

Both common layouts load: `images/<split>/` + `labels/<split>/` (Ultralytics) and `<split>/images/` +
`<split>/labels/` (Roboflow, whose validation split is called `valid`); a `data.yaml` whose `<split>:` entry
names a folder or a list file wins over both. YOLO class `c` becomes label `c + 1` (0 is background here). A
line with more than four coordinates is a segmentation polygon and gives the polygon's bounding box. A picture
without a label file is a picture with no objects, as in YOLO itself.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ssd.data.dataset import (
    DetectionDataset,
    RawBox,
    Record,
    Transform,
    checked_record,
    numeric_image_ids,
)
from ssd.data.formats.base import DataFormat, LoadOptions
from ssd.data.pictures import PICTURE_SUFFIXES, picture_size
from ssd.data.problems import DROPPED_BOX, SKIPPED_ANNOTATION, SKIPPED_PICTURE, ProblemLog
from ssd.errors import DatasetError

_SPLIT_NAMES = ("train", "val", "valid", "validation", "test")
_SPLIT_ALIASES = {"val": ("val", "valid", "validation"), "valid": ("valid", "val", "validation")}


def _yaml(root: Path) -> dict:
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        path = root / name
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text())
            except yaml.YAMLError as error:
                raise DatasetError(f"{path}: not valid YAML ({error})") from None
            if not isinstance(data, dict):
                raise DatasetError(f"{path}: expected a mapping with 'names'")
            data["_file"] = path
            return data
    return {}


def is_yolo(root: Path) -> bool:
    if _yaml(root) or (root / "classes.txt").is_file():
        return (root / "images").is_dir() or any((root / s / "images").is_dir() for s in _SPLIT_NAMES)
    return False


def yolo_splits(root: Path) -> list[str]:
    found = (
        {p.name for p in (root / "images").iterdir() if p.is_dir()} if (root / "images").is_dir() else set()
    )
    found |= {s for s in _SPLIT_NAMES if (root / s / "images").is_dir()}
    return sorted(found)


def _class_names(root: Path, config: dict) -> list[str]:
    names = config.get("names")
    if isinstance(names, dict):  # {0: person, 1: bicycle}
        try:
            return [str(names[i]) for i in range(len(names))]
        except KeyError:
            raise DatasetError(
                f"{config['_file']}: 'names' must map 0..N-1 to names, found {names}"
            ) from None
    if isinstance(names, list) and names:
        return [str(name) for name in names]
    if (root / "classes.txt").is_file():
        return [line.strip() for line in (root / "classes.txt").read_text().splitlines() if line.strip()]
    raise DatasetError(f"{root}: no class names (a data.yaml with 'names' or a classes.txt)")


def _labels_dir(images_dir: Path) -> Path:
    parts = list(images_dir.parts)
    for i in range(len(parts) - 1, -1, -1):  # the last "images" in the path, as YOLO itself does
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    return images_dir.parent / "labels"


def _pictures(root: Path, split: str, config: dict) -> list[tuple[Path, Path]]:
    """(picture, label file) pairs of the split, sorted by picture path."""
    aliases = _SPLIT_ALIASES.get(split, (split,))
    entry = next((config[a] for a in aliases if isinstance(config.get(a), str)), None)
    images_dirs: list[Path] = []
    listed: list[Path] | None = None
    if entry is not None:
        base = root / config["path"] if isinstance(config.get("path"), str) else root
        target = Path(entry) if Path(entry).is_absolute() else (base / entry).resolve()
        if not target.exists():  # Roboflow's YAMLs say "../train/images" but mean it from the YAML's folder
            target = root / Path(*[part for part in Path(entry).parts if part != ".."])
        if target.is_file():
            listed = [
                (target.parent / line.strip()).resolve()
                for line in target.read_text().splitlines()
                if line.strip()
            ]
        else:
            images_dirs.append(target)
    else:
        images_dirs += [root / "images" / a for a in aliases] + [root / a / "images" for a in aliases]
    if listed is None:
        existing = [d for d in images_dirs if d.is_dir()]
        if not existing:
            known = ", ".join(yolo_splits(root)) or "none"
            raise DatasetError(f"{root}: no pictures folder for split '{split}' (splits found: {known})")
        listed = sorted(p for p in existing[0].rglob("*") if p.suffix.lower() in PICTURE_SUFFIXES)
    pairs = []
    for picture in listed:
        images_dir = next((parent for parent in picture.parents if parent.name == "images"), picture.parent)
        relative = picture.relative_to(images_dir).with_suffix(".txt")
        pairs.append((picture, _labels_dir(images_dir) / relative))
    return pairs


def _raw_boxes(
    label_file: Path, num_classes: int, height: int, width: int, problems: ProblemLog
) -> list[RawBox]:
    boxes = []
    for number, line in enumerate(label_file.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"line {number}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            problems.add(str(label_file), f"{where} is not numbers: {line.strip()[:60]!r}", DROPPED_BOX)
            continue
        if len(values) < 5 or (len(values) > 5 and len(values) % 2 == 0):
            problems.add(
                str(label_file), f"{where} has {len(values)} values, expected 'class cx cy w h'", DROPPED_BOX
            )
            continue
        class_id = values[0]
        if class_id != int(class_id) or not 0 <= class_id < num_classes:
            problems.add(
                str(label_file),
                f"{where}: unknown class id {fields[0]} (the dataset has {num_classes} "
                f"classes, ids 0..{num_classes - 1})",
                DROPPED_BOX,
            )
            continue
        if len(values) == 5:
            cx, cy, w, h = values[1:]
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        else:
            xs, ys = values[1::2], values[2::2]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        xyxy = (x1 * width, y1 * height, x2 * width, y2 * height)
        boxes.append(RawBox(xyxy, int(class_id) + 1, where))
    return boxes


def load_yolo(
    root: Path,
    split: str = "train",
    *,
    strict: bool = False,
    verify: str = "header",
    transform: Transform | None = None,
) -> DetectionDataset:
    root = Path(root)
    config = _yaml(root)
    names = _class_names(root, config)
    problems = ProblemLog(f"{root} ({split})", strict=strict)
    pairs = _pictures(root, split, config)

    expected = {label for _, label in pairs}
    for label_dir in sorted({label.parent for label in expected}):
        for label_file in sorted(label_dir.glob("*.txt")) if label_dir.is_dir() else []:
            if label_file not in expected and label_file.name != "classes.txt":
                problems.add(str(label_file), "label file has no picture", SKIPPED_ANNOTATION)

    records: list[Record] = []
    ids = numeric_image_ids([picture.stem for picture, _ in pairs])
    for (picture, label_file), image_id in zip(pairs, ids, strict=True):
        try:
            height, width = picture_size(picture, "header" if verify == "exists" else verify)
        except DatasetError as error:
            problems.add(str(picture), str(error).split(": ", 1)[1], SKIPPED_PICTURE)
            continue
        raw = _raw_boxes(label_file, len(names), height, width, problems) if label_file.is_file() else []
        file_name = picture.name
        records.append(
            checked_record(picture, file_name, image_id, height, width, raw, str(label_file), problems)
        )
    problems.finish()
    return DetectionDataset(records, names, f"{root} ({split})", problems, transform)


def _load(root: Path, split: str, options: LoadOptions) -> DetectionDataset:
    return load_yolo(root, split, strict=options.strict, verify=options.verify, transform=options.transform)


YOLO = DataFormat(
    name="yolo",
    layout="YOLO (images/, labels/ and a data.yaml or classes.txt)",
    recognises=lambda root, split: root.is_dir() and is_yolo(root),
    splits=yolo_splits,
    load=_load,
)
