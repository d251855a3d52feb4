"""YOLO txt: one label file per picture, each line `class cx cy w h` in 0..1 of the picture's size; class
names from a data.yaml (`names`) or a `classes.txt`.

The layouts: `images/<split>/` + `labels/<split>/` (Ultralytics), `<split>/images/` + `<split>/labels/`
(Roboflow, whose validation split is called `valid`), `images/` + `labels/` without splits, and LabelImg's
YOLO mode (each picture's `.txt` beside it, with `classes.txt`). A data.yaml's `<split>:` entries (a folder, a
list file of pictures, or a list of either; relative to its `path:`, which is itself absolute or relative to
the YAML's folder) win over the folders found. YOLO class `c` becomes label `c + 1` (0 is background here). A
line with more than four coordinates is a segmentation polygon and gives the polygon's bounding box. A picture
without a label file is a picture with no objects, as in YOLO itself; a label file that is not text skips its
picture (reading it as having no objects would teach the model that its objects are background).
"""

from __future__ import annotations

import math
import reprlib
from pathlib import Path

import yaml

from ssd.data.dataset import (
    DetectionDataset,
    RawBox,
    Record,
    Transform,
    checked_picture_size,
    checked_record,
    numeric_image_ids,
)
from ssd.data.formats.base import DataFormat, LoadOptions
from ssd.data.paths import exists, inside, is_dir, is_file, read_text_lines
from ssd.data.pictures import PICTURE_SUFFIXES
from ssd.data.problems import DROPPED_BOX, SKIPPED_ANNOTATION, SKIPPED_PICTURE, ProblemLog
from ssd.data.splits import WHOLE
from ssd.errors import DatasetError

_SPLIT_FOLDERS = ("train", "val", "valid", "validation", "test")
_YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")
_SPLIT_KEYS = ("train", "val", "test")  # a data.yaml's split entries


def _yaml_file(root: Path) -> Path | None:
    """The dataset's YAML: one of the usual names, else the one YAML in the folder that has `names`."""
    for name in _YAML_NAMES:
        if (root / name).is_file():
            return root / name
    others = [p for p in sorted(root.glob("*.y*ml")) if p.suffix.lower() in (".yaml", ".yml") and p.is_file()]
    with_names = [p for p in others if "names" in _yaml_text(p)]
    return with_names[0] if len(with_names) == 1 else None


def _yaml_text(path: Path) -> str:
    try:
        return "\n".join(read_text_lines(path))
    except DatasetError:
        return ""


def _yaml(root: Path) -> dict:
    path = _yaml_file(root)
    if path is None:
        return {}
    try:
        data = yaml.safe_load("\n".join(read_text_lines(path)))
    # Besides YAMLError, PyYAML's constructors raise what their conversions raise on hostile text: ValueError
    # (`2001-13-01`, `!!float abc`), AttributeError (`!!timestamp x`), RecursionError (deep nesting), ...
    except Exception as error:
        raise DatasetError(f"{path}: not valid YAML ({str(error)[:160] or type(error).__name__})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a mapping with 'names'")
    data["_file"] = path
    return data


def _flat_pictures(folder: Path) -> bool:
    return folder.is_dir() and any(
        p.suffix.lower() in PICTURE_SUFFIXES for p in folder.iterdir() if p.is_file()
    )


def is_yolo(root: Path) -> bool:
    if not root.is_dir():
        return False
    config = _yaml(root)
    if not config and not (root / "classes.txt").is_file():
        return False
    if any(isinstance(config.get(key), (str, list)) for key in _SPLIT_KEYS):
        return True
    return (
        (root / "images").is_dir()
        or any((root / s / "images").is_dir() for s in _SPLIT_FOLDERS)
        or ((root / "classes.txt").is_file() and _flat_pictures(root))
    )


def _yaml_splits(config: dict) -> list[str]:
    return [key for key in _SPLIT_KEYS if isinstance(config.get(key), (str, list)) and config.get(key)]


def yolo_splits(root: Path) -> list[str]:
    from_yaml = _yaml_splits(_yaml(root))
    if from_yaml:
        return from_yaml
    images = root / "images"
    found = {p.name for p in images.iterdir() if p.is_dir()} if images.is_dir() else set()
    found |= {s for s in _SPLIT_FOLDERS if (root / s / "images").is_dir()}
    return sorted(found)


def _class_names(root: Path, config: dict) -> list[str]:
    names = config.get("names")
    if isinstance(names, dict):  # {0: person, 1: bicycle}
        try:
            names = [names[i] for i in range(len(names))]
        except KeyError:
            raise DatasetError(
                f"{config['_file']}: 'names' must map 0..N-1 to names, found {_shown(names)}"
            ) from None
    if isinstance(names, list) and names:
        # A name is text or a number; a list or mapping is a mistake, and printing one built from YAML
        # aliases (a billion strings from a few hundred bytes) would never end.
        nested = next((name for name in names if isinstance(name, (list, dict, set))), None)
        if nested is not None:
            raise DatasetError(
                f"{config['_file']}: 'names' must be class names, found a {type(nested).__name__} "
                f"{_shown(nested)}"
            )
        return [str(name) for name in names]
    if (root / "classes.txt").is_file():
        return [line.strip() for line in read_text_lines(root / "classes.txt") if line.strip()]
    where = config.get("_file", root)
    raise DatasetError(f"{where}: no class names (a data.yaml with 'names' or a classes.txt)")


def _shown(value: object) -> str:
    """`value` as a message shows it: a few items of two levels, whatever its size (YAML aliases build a
    billion strings from a few hundred bytes)."""
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxlist, shown.maxdict, shown.maxstring, shown.maxother = 2, 4, 4, 40, 40
    return shown.repr(value)


def _base(root: Path, config: dict) -> Path:
    """The folder a data.yaml's split entries are relative to: its `path:` (absolute, or relative to the
    YAML's folder) when that exists, else the YAML's folder (a dataset moved since its YAML was written)."""
    path = config.get("path")
    if isinstance(path, str) and path.strip():
        base = _expanded(path)
        if base is not None:
            base = base if base.is_absolute() else root / base
            if is_dir(base):
                return base
    return root


def _expanded(path: str) -> Path | None:
    """`path` with a leading `~` or `~user` expanded; None for the home of a user this machine has not."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return None


def _entry_targets(root: Path, config: dict, entry: object) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    base = _base(root, config)
    targets = []
    for item in entries:
        if not isinstance(item, str) or not item.strip():
            raise DatasetError(
                f"{config['_file']}: a split entry must be a folder or file name, found {_shown(item)}"
            )
        target = _expanded(item)
        if target is None:
            raise DatasetError(f"{config['_file']}: split entry {item!r} names the home of an unknown user")
        target = target if target.is_absolute() else base / target
        if not exists(target):  # Roboflow's YAMLs say "../train/images" but mean it from the YAML's folder
            target = root / Path(*[part for part in Path(item).parts if part not in ("..", ".")])
        if not exists(target):
            raise DatasetError(f"{config['_file']}: split entry {item!r} names no folder or file ({target})")
        targets.append(target)
    return targets


def _split_folders(root: Path, split: str, config: dict) -> list[Path]:
    """The pictures folders or list files of `split`."""
    keys = _yaml_splits(config)
    if keys:
        if split == WHOLE:
            return [t for key in keys for t in _entry_targets(root, config, config[key])]
        if split not in keys:
            raise DatasetError(f"{config['_file']}: no split '{split}' (splits found: {', '.join(keys)})")
        return _entry_targets(root, config, config[split])
    if split == WHOLE:
        found = yolo_splits(root)
        if found:
            return [t for s in found for t in _split_folders(root, s, config)]
        return [root / "images"] if (root / "images").is_dir() else [root]
    candidates = [root / "images" / split, root / split / "images"]
    existing = [d for d in candidates if d.is_dir()]
    if not existing:
        known = ", ".join(yolo_splits(root)) or "none"
        raise DatasetError(f"{root}: no pictures folder for split '{split}' (splits found: {known})")
    return existing[:1]


def _pictures(root: Path, split: str, config: dict, problems: ProblemLog) -> list[tuple[Path, Path]]:
    """(picture, label file) pairs of the split, in order."""
    listed: list[Path] = []
    for target in _split_folders(root, split, config):
        if target.is_file():
            for line in read_text_lines(target):
                name = line.strip()
                if not name:
                    continue
                picture = inside(target.parent, name)
                if picture is None:
                    problems.add(
                        str(target), f"{name[:80]!r} leaves the dataset folder; refused", SKIPPED_PICTURE
                    )
                    continue
                listed.append(picture)
        else:
            # The dataset's own folder holds LabelImg's pictures beside their labels: not its subfolders.
            found = target.iterdir() if target == root else target.rglob("*")
            listed += sorted(p for p in found if p.suffix.lower() in PICTURE_SUFFIXES and p.is_file())
    return [(picture, _label_file(picture, root)) for picture in listed]


def _label_file(picture: Path, root: Path) -> Path:
    """A picture's label file: under the nearest `images` folder above the picture, with `images` replaced
    by `labels`, as YOLO itself does; beside the picture when there is no `images` folder between it and the
    dataset (LabelImg), so that a dataset kept in some `.../images/...` folder of the user's own still finds
    its labels. A picture outside the dataset (an absolute data.yaml entry) may use any `images` above it."""
    inside = picture.is_relative_to(root)
    above = [parent for parent in picture.parents if not inside or parent.is_relative_to(root)]
    images_dir = next((parent for parent in above if parent.name == "images"), None)
    if images_dir is None:
        return picture.with_suffix(".txt")
    return images_dir.with_name("labels") / picture.relative_to(images_dir).with_suffix(".txt")


def _raw_boxes(
    label_file: Path, num_classes: int, height: int, width: int, problems: ProblemLog
) -> list[RawBox]:
    boxes = []
    for number, line in enumerate(read_text_lines(label_file), start=1):
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
        if not (math.isfinite(class_id) and class_id == int(class_id) and 0 <= class_id < num_classes):
            problems.add(
                str(label_file),
                f"{where}: unknown class id {fields[0][:20]} (the dataset has {num_classes} "
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
    max_pixels: int | None = None,
) -> DetectionDataset:
    root = Path(root)
    config = _yaml(root)
    names = _class_names(root, config)
    source = f"{root} ({split})"
    problems = ProblemLog(source, strict=strict)
    pairs = _pictures(root, split, config, problems)

    expected = {label for _, label in pairs}
    for label_dir in sorted({label.parent for label in expected}):
        for label_file in sorted(label_dir.glob("*.txt")) if is_dir(label_dir) else []:
            if label_file not in expected and label_file.name != "classes.txt":
                problems.add(str(label_file), "label file has no picture", SKIPPED_ANNOTATION)

    records: list[Record] = []
    ids = numeric_image_ids([picture.stem for picture, _ in pairs])
    for (picture, label_file), image_id in zip(pairs, ids, strict=True):
        # A list file may name a picture that is not there, even by a name no file can have (too long for
        # the file system), which the picture reader is not asked about.
        if not exists(picture):
            problems.add(str(picture), "picture not found", SKIPPED_PICTURE)
            continue
        # YOLO states no size: the picture's own, as shown (EXIF orientation applied, as Ultralytics reads it).
        size = checked_picture_size(
            picture,
            None,
            "header" if verify == "exists" else verify,
            str(label_file),
            "",
            problems,
            max_pixels,
        )
        if size is None:
            continue
        try:
            raw = (
                _raw_boxes(label_file, len(names), size.height, size.width, problems)
                if is_file(label_file)
                else []
            )
        except DatasetError as error:
            problems.add(str(label_file), str(error).split(": ", 1)[1], SKIPPED_PICTURE)
            continue
        records.append(
            checked_record(
                picture, picture.name, image_id, size.height, size.width, raw, str(label_file), problems
            )
        )
    problems.finish()
    return DetectionDataset(records, names, source, problems, transform, max_pixels=max_pixels)


def _load(root: Path, split: str, options: LoadOptions) -> DetectionDataset:
    return load_yolo(
        root,
        split,
        strict=options.strict,
        verify=options.verify,
        transform=options.transform,
        max_pixels=options.max_pixels,
    )


YOLO = DataFormat(
    name="yolo",
    layout="YOLO (images/ + labels/ or <split>/images/ + <split>/labels/, with a data.yaml or classes.txt)",
    recognises=lambda root, split: is_yolo(root),
    splits=yolo_splits,
    load=_load,
)
