"""Datasets (COCO, Pascal VOC, YOLO, built-in synthetic), augmentation and loading.

`build_dataset(path, split)` recognises the layout by itself; every format gives the same `DetectionDataset`
whose samples follow the package's convention (README, "A dataset sample").
"""

from __future__ import annotations

from pathlib import Path

from ssd.data.dataset import VERIFY_LEVELS, DetectionDataset, Transform
from ssd.data.export import coco_dict, export_coco
from ssd.data.formats.coco import coco_json_for_split, coco_splits, load_coco
from ssd.data.formats.synthetic import SyntheticShapes, write_synthetic_coco
from ssd.data.formats.voc import is_voc, load_voc, voc_splits
from ssd.data.formats.yolo import is_yolo, load_yolo, yolo_splits
from ssd.data.loader import build_loader, collate_detection
from ssd.data.problems import DataWarning
from ssd.data.transforms import PRESETS, build_transforms
from ssd.errors import DatasetError

SYNTHETIC = "synthetic"

__all__ = [
    "PRESETS",
    "SYNTHETIC",
    "DataWarning",
    "DetectionDataset",
    "SyntheticShapes",
    "build_dataset",
    "build_loader",
    "build_transforms",
    "coco_dict",
    "collate_detection",
    "detect_format",
    "export_coco",
    "write_synthetic_coco",
]


def _format_of(folder: Path, split: str) -> str | None:
    if is_voc(folder):
        return "voc"
    if coco_json_for_split(folder, split) is not None or coco_splits(folder):
        return "coco"
    if is_yolo(folder):
        return "yolo"
    return None


def detect_format(path: str | Path, split: str = "train") -> tuple[str, Path]:
    """("synthetic" | "coco" | "voc" | "yolo", the folder or file holding it) for a user's `path`."""
    if str(path) == SYNTHETIC:
        return SYNTHETIC, Path(SYNTHETIC)
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(
            f"{path}: no such file or folder (give a dataset folder, a COCO JSON or 'synthetic')"
        )
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco", path
        raise DatasetError(f"{path}: a file given as a dataset must be a COCO JSON")
    found = _format_of(path, split)
    if found is not None:
        return found, path
    # A folder holding one dataset folder (an unpacked archive: bccd/BCCD, VOCdevkit/VOC2007).
    inside = [
        (fmt, child)
        for child in sorted(path.iterdir())
        if child.is_dir()
        for fmt in [_format_of(child, split)]
        if fmt is not None
    ]
    if len(inside) == 1:
        return inside[0]
    raise DatasetError(
        f"{path}: not a dataset folder. Expected Pascal VOC (Annotations/, JPEGImages/, ImageSets/Main/), "
        "COCO (annotations/instances_<split>.json and <split>/) or YOLO (images/, labels/ and a data.yaml or "
        "classes.txt)"
        + (f"; found several datasets inside: {', '.join(str(c) for _, c in inside)}" if inside else "")
    )


def available_splits(path: str | Path) -> list[str]:
    fmt, root = detect_format(path)
    if fmt == SYNTHETIC:
        return ["train", "val", "test"]
    if fmt == "voc":
        return voc_splits(root)
    if fmt == "yolo":
        return yolo_splits(root)
    return [root.stem] if root.is_file() else coco_splits(root)


def build_dataset(
    path: str | Path,
    split: str = "train",
    *,
    strict: bool = False,
    verify: str | None = None,
    transform: Transform | None = None,
    class_names: list[str] | None = None,
    image_root: str | Path | None = None,
    **synthetic_options,
) -> DetectionDataset:
    """The dataset at `path` (a folder of any supported layout, a COCO JSON, or "synthetic"), split `split`.

    By default bad boxes are dropped and bad pictures skipped with one warning that counts them; `strict`
    turns any problem into a DatasetError listing them, and decodes every picture up front (`verify="decode"`)
    so a corrupt one is found before training starts. `verify` is "exists", "header" (default) or "decode".
    `class_names` fixes VOC's classes (else every name found, sorted); `image_root` is where a COCO JSON's
    pictures are, when they are not next to it; `synthetic_options` go to `SyntheticShapes` (num_images,
    seed, image_size).
    """
    verify = verify or ("decode" if strict else "header")
    if verify not in VERIFY_LEVELS:
        raise DatasetError(f"verify must be one of {', '.join(VERIFY_LEVELS)}, got '{verify}'")
    fmt, root = detect_format(path, split)
    if fmt == SYNTHETIC:
        return SyntheticShapes(split, transform=transform, **synthetic_options)
    if synthetic_options:
        raise DatasetError(f"{path}: options {sorted(synthetic_options)} apply to the synthetic dataset only")
    if fmt == "voc":
        return load_voc(
            root, split, class_names=class_names, strict=strict, verify=verify, transform=transform
        )
    if fmt == "yolo":
        return load_yolo(root, split, strict=strict, verify=verify, transform=transform)
    json_path = root if root.is_file() else coco_json_for_split(root, split)
    if json_path is None:
        known = ", ".join(coco_splits(root)) or "none"
        raise DatasetError(f"{root}: no annotations for split '{split}' (splits found: {known})")
    return load_coco(json_path, image_root=image_root, strict=strict, verify=verify, transform=transform)
