"""A dataset from the path a user gives: its format recognised, its splits listed, a split loaded.

`build_dataset(path, split)` recognises the layout by itself and matches the split by meaning
(`ssd.data.splits`); every format gives the same `DetectionDataset` whose samples follow the package's
convention (README, "A dataset sample").
"""

from __future__ import annotations

from pathlib import Path

from ssd.data.dataset import VERIFY_LEVELS, DetectionDataset, Record, Transform
from ssd.data.formats import FORMATS, DataFormat, LoadOptions
from ssd.data.formats.synthetic import DEFAULT_SIZES as SYNTHETIC_SPLITS
from ssd.data.formats.synthetic import SyntheticShapes
from ssd.data.splits import (
    AUTOMATIC_SPLITS,
    SPLIT_SEED,
    VAL_FRACTION,
    WHOLE,
    is_unsplit,
    resolve_split,
    validation_indices,
)
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
    """The splits a user can name: the dataset's own, or "train" and "val" of an unsplit dataset, which
    `build_dataset` divides (`ssd.data.splits`)."""
    fmt, root = find_format(path)
    if fmt is None:
        return list(SYNTHETIC_SPLITS)
    names = fmt.splits(root)
    return list(AUTOMATIC_SPLITS) if is_unsplit(names) else names


def is_automatically_split(path: str | Path) -> bool:
    """Whether the dataset at `path` has no splits of its own, so that "train" and "val" are divided here."""
    fmt, root = find_format(path)
    return fmt is not None and is_unsplit(fmt.splits(root))


def build_dataset(
    path: str | Path,
    split: str = "train",
    *,
    strict: bool = False,
    verify: str | None = None,
    transform: Transform | None = None,
    class_names: list[str] | None = None,
    image_root: str | Path | None = None,
    max_pixels: int | None = None,
    val_fraction: float = VAL_FRACTION,
    split_seed: int = SPLIT_SEED,
    **synthetic_options,
) -> DetectionDataset:
    """The dataset at `path` (a folder of any supported layout, a COCO JSON, or "synthetic"), split `split`.

    `split` is matched by meaning ("val" finds `val2017` or `valid`, see `ssd.data.splits`); of a dataset
    without splits, "train" and "val" are its two parts (`val_fraction` of the pictures for validation, chosen
    by `split_seed`) and "all" is every picture. By default bad boxes are dropped and bad pictures skipped with
    one warning that counts them; `strict` turns any problem into a DatasetError listing them, and decodes
    every picture up front (`verify="decode"`) so a corrupt one is found before training starts. `verify` is
    "exists", "header" (default) or "decode". `class_names` fixes VOC's classes (else every name found,
    sorted); `image_root` is where a COCO JSON's pictures are, when they are not next to it; pictures over
    `max_pixels` are refused as decompression bombs; `synthetic_options` go to `SyntheticShapes`
    (num_images, seed, image_size).
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
        max_pixels=max_pixels,
    )
    names = fmt.splits(root)
    if not is_unsplit(names):
        return fmt.load(root, split if split == WHOLE else resolve_split(split, names, str(root)), options)
    whole = fmt.load(root, names[0] if names else WHOLE, options)
    if split == WHOLE or split in names:
        return whole
    try:
        split = resolve_split(split, list(AUTOMATIC_SPLITS), str(root))  # "valid" means "val" here too
    except DatasetError:
        raise DatasetError(
            f"{root}: no split '{split}'; the dataset has no splits of its own, so it is divided into "
            f"{' and '.join(AUTOMATIC_SPLITS)} (or take '{WHOLE}')"
        ) from None
    folder = root if root.is_dir() else root.parent
    keys = [_key(record, folder) for record in whole.records]
    validation = validation_indices(keys, val_fraction, split_seed)
    wanted = [i for i in range(len(keys)) if (i in validation) == (split == AUTOMATIC_SPLITS[1])]
    source = f"{whole.source}, automatic '{split}' ({val_fraction:g} for validation, seed {split_seed})"
    return whole.subset(wanted, source)


def _key(record: Record, folder: Path) -> str:
    """A picture's name inside its dataset, the same wherever the dataset folder is and however its path was
    typed; a picture outside the folder (a COCO JSON's `--image-root`) is known by its annotation's name."""
    try:
        return record.path.resolve().relative_to(folder.resolve()).as_posix()
    except (ValueError, OSError):
        return Path(record.file_name).as_posix()
