"""A dataset from the path a user gives: its format recognised, its splits listed, a split loaded.

`build_dataset(path, split)` recognises the layout by itself; every format gives the same `DetectionDataset`
whose samples follow the package's convention (README, "A dataset sample").
"""

from __future__ import annotations

from pathlib import Path

from ssd.data.dataset import VERIFY_LEVELS, DetectionDataset, Transform
from ssd.data.formats import FORMATS, DataFormat, LoadOptions
from ssd.data.formats.synthetic import DEFAULT_SIZES as SYNTHETIC_SPLITS
from ssd.data.formats.synthetic import SyntheticShapes
from ssd.errors import DatasetError

SYNTHETIC = "synthetic"


def _format_of(path: Path, split: str) -> DataFormat | None:
    return next((fmt for fmt in FORMATS if fmt.recognises(path, split)), None)


def find_format(path: str | Path, split: str = "train") -> tuple[DataFormat | None, Path]:
    """The format of a user's `path` and the folder or file holding it; (None, "synthetic") for the built-in
    data. A folder holding exactly one dataset folder (an unpacked archive: bccd/BCCD) is looked into."""
    if str(path) == SYNTHETIC:
        return None, Path(SYNTHETIC)
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(
            f"{path}: no such file or folder (give a dataset folder, a COCO JSON or 'synthetic')"
        )
    found = _format_of(path, split)
    if found is not None:
        return found, path
    if path.is_file():
        raise DatasetError(f"{path}: a file given as a dataset must be a COCO JSON")
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
        f"{path}: not a dataset folder. Expected "
        + ", ".join(fmt.layout for fmt in FORMATS)
        + (f"; found several datasets inside: {', '.join(str(c) for _, c in inside)}" if inside else "")
    )


def detect_format(path: str | Path, split: str = "train") -> tuple[str, Path]:
    """("synthetic" | a format's name, the folder or file holding it) for a user's `path`."""
    fmt, root = find_format(path, split)
    return (fmt.name if fmt is not None else SYNTHETIC), root


def available_splits(path: str | Path) -> list[str]:
    fmt, root = find_format(path)
    return list(SYNTHETIC_SPLITS) if fmt is None else fmt.splits(root)


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
    fmt, root = find_format(path, split)
    if fmt is None:
        return SyntheticShapes(split, transform=transform, **synthetic_options)
    if synthetic_options:
        raise DatasetError(f"{path}: options {sorted(synthetic_options)} apply to the synthetic dataset only")
    options = LoadOptions(
        strict=strict,
        verify=verify,
        transform=transform,
        class_names=class_names,
        image_root=Path(image_root) if image_root is not None else None,
    )
    return fmt.load(root, split, options)
