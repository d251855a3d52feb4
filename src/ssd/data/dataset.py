"""The dataset every format loads into: a list of records (picture + boxes) and the class names.

Formats differ only in how they read their annotations; once read, a COCO, VOC, YOLO or synthetic dataset is
the same object, so the trainer, the evaluator and `ssd data check` never care where the data came from.
Annotations are read and checked when the dataset is built; pictures are decoded only when a sample is asked
for, and `get_target` gives the ground truth without decoding anything (evaluation needs all of it at once).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ssd.data.pictures import picture_info, read_picture
from ssd.data.problems import (
    CLIPPED_BOX,
    DROPPED_BOX,
    SIZE_CORRECTED,
    SKIPPED_PICTURE,
    WARNED,
    DataWarning,
    ProblemLog,
)
from ssd.errors import DatasetError

Target = dict
Transform = Callable[..., tuple[Tensor, Target]]

# How carefully pictures are looked at when a dataset is built: "exists" only stats the file, "header" also
# reads its size (cheap: a few hundred bytes), "decode" decodes every picture (finds truncated files; slow).
VERIFY_LEVELS = ("exists", "header", "decode")

# A box must be at least this wide and high, in pixels, to be kept; smaller ones are degenerate.
MIN_BOX_SIZE = 1e-3

# A box may overshoot the picture by this many pixels before it counts as a problem (rounding, 1-based VOC).
BOX_TOLERANCE = 1.0


@dataclass
class Record:
    """One picture and its boxes, as read from the annotations (boxes xyxy in the stored picture's pixels)."""

    path: Path
    file_name: str
    image_id: int
    height: int
    width: int
    boxes: Tensor = field(default_factory=lambda: torch.zeros((0, 4), dtype=torch.float32))
    labels: Tensor = field(default_factory=lambda: torch.zeros((0,), dtype=torch.int64))
    iscrowd: Tensor = field(default_factory=lambda: torch.zeros((0,), dtype=torch.bool))
    difficult: Tensor = field(default_factory=lambda: torch.zeros((0,), dtype=torch.bool))
    # The annotation's area (COCO's is the mask's, which decides AP small/medium/large); None: the box's.
    area: Tensor | None = None
    # Whether the picture is read with its EXIF orientation applied: yes, unless its annotation was made on
    # the stored pixels (see `checked_picture_size`).
    orient: bool = True

    def __post_init__(self) -> None:
        if self.area is None:
            self.area = (self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])

    def target(self) -> Target:
        return {
            "boxes": self.boxes.clone(),
            "labels": self.labels.clone(),
            "iscrowd": self.iscrowd.clone(),
            "difficult": self.difficult.clone(),
            "area": self.area.clone(),
            "image_id": self.image_id,
            "file_name": self.file_name,
            "orig_size": (self.height, self.width),
        }


def _reduction(
    decoded: tuple[int, int], annotated: tuple[int, int], shorter_side_at_least: int | None
) -> int | None:
    """1, or the factor (2, 4, 8) a JPEG decoded at `shorter_side_at_least` is smaller than its annotated
    (height, width) by (the decoder rounds the reduced sides up): None when the picture's size fits neither,
    i.e. it does not match its annotation."""
    factors = [1]
    if shorter_side_at_least is not None:
        # The factor `read_picture` decodes at: the largest whose shorter side keeps `shorter_side_at_least`.
        factors += [f for f in (8, 4, 2) if min(annotated) / f >= shorter_side_at_least][:1]
    for factor in factors:
        if decoded == tuple(-(-side // factor) for side in annotated):
            return factor
    return None


@contextlib.contextmanager
def single_threaded():
    """Run per-sample work on one thread: its tensors are small, and with several threads each little
    operation pays hand-off costs many times its work (on a busy 2-core machine, 30 ms instead of 0.2 ms)."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class DetectionDataset(Dataset):
    """Pictures with boxes; samples follow the package's convention (README, "A dataset sample").

    `dataset[i]` is `(image, target)`, after `transform` when one is set. `class_names` lists the K object
    classes (label i is `class_names[i - 1]`), `num_classes` is K + 1 (background counted).
    """

    def __init__(
        self,
        records: list[Record],
        class_names: list[str],
        source: str,
        problems: ProblemLog,
        transform: Transform | None = None,
        label_to_category_id: dict[int, int] | None = None,
        max_pixels: int | None = None,
    ):
        self.records = records
        self.class_names = list(class_names)
        self.source = source
        self.problems = problems
        self.transform = transform
        self.max_pixels = max_pixels  # larger pictures are refused as decompression bombs (None: the default)
        # COCO keeps its own category ids; every other format's ids are the labels themselves.
        self.label_to_category_id = label_to_category_id or {i: i for i in range(1, len(class_names) + 1)}
        self._unreadable: set[int] = set()

    @property
    def num_classes(self) -> int:
        return len(self.class_names) + 1

    @property
    def category_id_to_label(self) -> dict[int, int]:
        return {category: label for label, category in self.label_to_category_id.items()}

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.source!r}, pictures={len(self)}, "
            f"boxes={sum(len(r.boxes) for r in self.records)}, classes={len(self.class_names)})"
        )

    def get_target(self, index: int) -> Target:
        """The ground truth of picture `index` without decoding the picture."""
        return self.records[index].target()

    @property
    def targets(self) -> list[Target]:
        return [record.target() for record in self.records]

    def subset(self, indices: list[int], source: str) -> DetectionDataset:
        """The pictures at `indices`, with this dataset's classes, problems and settings."""
        records = [self.records[i] for i in indices]
        return DetectionDataset(
            records,
            self.class_names,
            source,
            self.problems,
            self.transform,
            self.label_to_category_id,
            self.max_pixels,
        )

    def load(self, index: int, shorter_side_at_least: int | None = None) -> tuple[Tensor, Target]:
        """Decode picture `index` and its target, with no transform. A picture that cannot be read is an error
        under `strict`; otherwise it is skipped with a warning and the next readable one is returned.

        With `shorter_side_at_least`, a large JPEG may be decoded at 1/2, 1/4 or 1/8 of its size (see
        `read_picture`); the target's boxes and areas are scaled with it (`orig_size` stays the file's)."""
        for offset in range(len(self.records)):
            candidate = (index + offset) % len(self.records)
            if candidate in self._unreadable:
                continue
            record = self.records[candidate]
            try:
                image = read_picture(
                    record.path,
                    max_pixels=self.max_pixels,
                    orient=record.orient,
                    shorter_side_at_least=shorter_side_at_least,
                )
                reduction = _reduction(
                    tuple(image.shape[1:]), (record.height, record.width), shorter_side_at_least
                )
                if reduction is None:
                    raise DatasetError(
                        f"{record.path}: picture is {image.shape[2]}x{image.shape[1]}, its annotation says "
                        f"{record.width}x{record.height}"
                    )
            except DatasetError as error:
                if self.problems.strict:
                    raise
                self._unreadable.add(candidate)
                warnings.warn(f"{error} ({SKIPPED_PICTURE})", DataWarning, stacklevel=2)
                continue
            target = record.target()
            if reduction != 1:
                height, width = image.shape[1:]
                scale_x, scale_y = width / record.width, height / record.height
                target["boxes"] = target["boxes"] * torch.tensor([scale_x, scale_y, scale_x, scale_y])
                target["area"] = target["area"] * (scale_x * scale_y)
            return image, target
        raise DatasetError(f"{self.source}: no picture in the dataset can be read")

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        with single_threaded():
            image, target = self.load(index)
            if self.transform is not None:
                image, target = self.transform(image, target)
            return image.contiguous(), target


@dataclass
class RawBox:
    """A box as a format's reader found it, before it is checked; `name` says where it is for messages."""

    xyxy: tuple[float, float, float, float]
    label: int
    name: str
    iscrowd: bool = False
    difficult: bool = False
    area: float | None = None


def checked_record(
    path: Path,
    file_name: str,
    image_id: int,
    height: int,
    width: int,
    raw_boxes: list[RawBox],
    annotation_file: str,
    problems: ProblemLog,
    orient: bool = True,
) -> Record:
    """A record holding only the boxes that make sense in a `width` x `height` picture.

    Zero-size, inverted, non-finite boxes and boxes wholly outside the picture are dropped; boxes overshooting
    the picture by more than `BOX_TOLERANCE` pixels are clipped; each is reported to `problems`.
    """
    kept: list[RawBox] = []
    clipped: list[tuple[float, float, float, float]] = []
    areas: list[float] = []
    for raw in raw_boxes:
        x1, y1, x2, y2 = raw.xyxy
        where = f"{raw.name} box ({x1:g}, {y1:g}, {x2:g}, {y2:g})"
        if not all(np.isfinite(raw.xyxy)):
            problems.add(annotation_file, f"{where} has a coordinate that is not a number", DROPPED_BOX)
            continue
        if x2 < x1 or y2 < y1:
            problems.add(annotation_file, f"{where} is inverted (x2 < x1 or y2 < y1)", DROPPED_BOX)
            continue
        if x2 - x1 < MIN_BOX_SIZE or y2 - y1 < MIN_BOX_SIZE:
            problems.add(annotation_file, f"{where} has zero size", DROPPED_BOX)
            continue
        if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
            problems.add(annotation_file, f"{where} lies outside the {width}x{height} picture", DROPPED_BOX)
            continue
        inside = (
            x1 >= -BOX_TOLERANCE
            and y1 >= -BOX_TOLERANCE
            and x2 <= width + BOX_TOLERANCE
            and y2 <= height + BOX_TOLERANCE
        )
        box = (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(x2, width), min(y2, height))
        if not inside:
            problems.add(
                annotation_file, f"{where} extends outside the {width}x{height} picture", CLIPPED_BOX
            )
        if box[2] - box[0] < MIN_BOX_SIZE or box[3] - box[1] < MIN_BOX_SIZE:
            problems.add(annotation_file, f"{where} has zero size inside the picture", DROPPED_BOX)
            continue
        area = (box[2] - box[0]) * (box[3] - box[1])
        # A region cannot cover more than its picture; a larger stated area (1e308, which float32 makes
        # infinite) would put the box in the wrong size class of COCO's AP small/medium/large.
        if raw.area is not None and raw.area <= width * height:
            area = raw.area
        elif raw.area is not None:
            problems.add(
                annotation_file,
                f"{where} has area {raw.area:g}, more than the {width}x{height} picture; the box's is used",
                WARNED,
            )
        kept.append(raw)
        clipped.append(box)
        areas.append(area)
    return Record(
        path=path,
        file_name=file_name,
        image_id=image_id,
        height=height,
        width=width,
        boxes=torch.tensor(clipped, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor([raw.label for raw in kept], dtype=torch.int64),
        iscrowd=torch.tensor([raw.iscrowd for raw in kept], dtype=torch.bool),
        difficult=torch.tensor([raw.difficult for raw in kept], dtype=torch.bool),
        area=torch.tensor(areas, dtype=torch.float32),
        orient=orient,
    )


@dataclass(frozen=True)
class PictureSize:
    height: int
    width: int
    orient: bool  # read with its EXIF orientation applied


def checked_picture_size(
    path: Path,
    stated: tuple[object, object] | None,
    verify: str,
    annotation_file: str,
    what: str,
    problems: ProblemLog,
    max_pixels: int | None = None,
) -> PictureSize | None:
    """The picture's size, checked against what its annotation states (`stated`: (height, width) as written,
    None when the annotation gives none); None, reported as a skipped picture, when the file cannot be read.

    The picture's size wins: a stated size that is not a size, or differs, is reported and corrected. Sizes are
    of the picture as shown (EXIF orientation applied), unless the annotation states the stored pixels' size
    of a picture whose orientation turns it: then the annotation was made on the stored pixels, and the
    picture is read without turning so that its boxes still fit. With `verify="exists"` a valid stated size is
    trusted without opening the file.
    """
    given = _stated_size(stated)
    if verify == "exists" and given is not None:
        return PictureSize(given[0], given[1], orient=True)
    try:
        info = picture_info(path, verify, max_pixels)
    except DatasetError as error:
        problems.add(str(path), str(error).split(": ", 1)[1], SKIPPED_PICTURE)
        return None
    shown, stored = (info.height, info.width), (info.stored_height, info.stored_width)
    if stated is not None and given is None:
        problems.add(
            annotation_file,
            f"{what} says {_size_text(stated)}, which is not a picture size; the picture's "
            f"{info.width}x{info.height} is used ({path})",
            SIZE_CORRECTED,
        )
    elif given is not None and given != shown:
        if given == stored:
            problems.add(
                annotation_file,
                f"{what} gives the stored size {info.stored_width}x{info.stored_height} of a picture that its "
                f"EXIF orientation {info.orientation} turns; read unturned, as it was annotated ({path})",
                WARNED,
            )
            return PictureSize(stored[0], stored[1], orient=False)
        problems.add(
            annotation_file,
            f"{what} says {given[1]}x{given[0]} but the picture is {info.width}x{info.height}; the picture's "
            f"size is used ({path})",
            SIZE_CORRECTED,
        )
    return PictureSize(shown[0], shown[1], orient=True)


def _stated_size(stated: tuple[object, object] | None) -> tuple[int, int] | None:
    """(height, width) when both are whole positive numbers (as numbers or text), else None."""
    if stated is None:
        return None
    sides = []
    for value in stated:
        try:
            number = float(str(value).strip()) if not isinstance(value, bool) else float("nan")
        except ValueError:
            return None
        if not (math.isfinite(number) and number >= 1 and number == int(number)) or number > 2**31:
            return None
        sides.append(int(number))
    return sides[0], sides[1]


def _size_text(stated: tuple[object, object]) -> str:
    return f"{str(stated[1])[:20]}x{str(stated[0])[:20]}"


def numeric_image_ids(names: list[str]) -> list[int]:
    """Integer ids for pictures known by name: the digits of each name when they are unique
    ("BloodImage_00042" -> 42, "2008_000123" -> 2008000123), else positions 1..N; stable and readable."""
    # Decimal digits, which int() reads in any script; "²" is a digit to str.isdigit but not a number.
    digits = ["".join(ch for ch in name if ch.isdecimal()) for name in names]
    if all(0 < len(d) <= 15 for d in digits) and len({int(d) for d in digits}) == len(names):
        return [int(d) for d in digits]
    return list(range(1, len(names) + 1))
