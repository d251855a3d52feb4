"""Pascal VOC: `Annotations/<id>.xml`, `JPEGImages/<id>.<ext>`, `ImageSets/Main/<split>.txt`, `classes.txt`.

What the VOC reader (`ssd.data.formats.voc`) takes back unchanged: `<size>` is the picture's size, box
corners are written as the floats they are (the reader takes them as written, no 1-based shift), and crowd
regions, which VOC does not have, carry `<iscrowd>1</iscrowd>` next to `<difficult>`. `classes.txt` keeps
the classes in their order, and keeps a class that has no box: without it a VOC reader sorts the names it
finds. Ids are shared by all splits, so a picture name used in two splits (a Roboflow export may have the
same file in `train/` and `valid/`) gets its split as a prefix; the same picture in two splits (VOC's own
`train` and `trainval`) is written once and listed in both.
"""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree.ElementTree import Element, SubElement, indent, tostring

import numpy as np

from ssd.data.dataset import DetectionDataset, Record
from ssd.data.writers.base import SplitWritten, Writer
from ssd.data.writers.files import copy_picture, unique_stem, write_text_atomically
from ssd.errors import DatasetError


def _number(value: float) -> str:
    """A float32 coordinate as the shortest text that reads back as the same float32 (12.0 -> "12")."""
    return np.format_float_positional(np.float32(value), trim="-")


def _check_class_names(names: list[str]) -> None:
    """VOC knows a class by its `<name>` text (stripped) and `classes.txt` by its line: both must be exact."""
    for name in names:
        if not name or name != name.strip() or "\n" in name or "\r" in name:
            raise DatasetError(
                f"class name {name!r} cannot be written as VOC: it is empty, starts or ends with a space, "
                "or holds a line break"
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DatasetError(
            f"class names {', '.join(repeated)} appear more than once; VOC knows a class by its name"
        )


def annotation_xml(record: Record, file_name: str, class_names: list[str]) -> str:
    """The VOC XML of one picture; ElementTree escapes `&`, `<` and the like in names."""
    annotation = Element("annotation")
    SubElement(annotation, "folder").text = "JPEGImages"
    SubElement(annotation, "filename").text = file_name
    size = SubElement(annotation, "size")
    SubElement(size, "width").text = str(record.width)
    SubElement(size, "height").text = str(record.height)
    SubElement(size, "depth").text = "3"  # pictures are read as RGB
    SubElement(annotation, "segmented").text = "0"
    for box, label, crowd, difficult in zip(
        record.boxes.tolist(),
        record.labels.tolist(),
        record.iscrowd.tolist(),
        record.difficult.tolist(),
        strict=True,
    ):
        obj = SubElement(annotation, "object")
        SubElement(obj, "name").text = class_names[label - 1]
        SubElement(obj, "pose").text = "Unspecified"
        SubElement(obj, "truncated").text = "0"
        SubElement(obj, "difficult").text = str(int(difficult))
        if crowd:
            SubElement(obj, "iscrowd").text = "1"
        bndbox = SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
            SubElement(bndbox, tag).text = _number(value)
    indent(annotation)
    return tostring(annotation, encoding="unicode") + "\n"


def _identity(record: Record) -> tuple:
    """What makes two records one VOC picture: the same file with the same annotations."""
    return (
        Path(record.path).resolve(),
        tuple(record.boxes.flatten().tolist()),
        tuple(record.labels.tolist()),
        tuple(record.iscrowd.tolist()),
        tuple(record.difficult.tolist()),
    )


def write_voc(out: Path, splits: dict[str, DetectionDataset]) -> list[SplitWritten]:
    class_names = next(iter(splits.values())).class_names if splits else []
    _check_class_names(class_names)
    taken: set[str] = set()
    id_of: dict[tuple, str] = {}
    written = []
    for split, dataset in splits.items():
        # The VOC reader takes ImageSets/Main files with "_" for per-class lists (`cat_train.txt`).
        split_name = split.replace("_", "-")
        report = SplitWritten(split_name)
        if split_name != split:
            report.notes.append(f"split '{split}' written as '{split_name}' (VOC split names have no '_')")
        ids = []
        for record in dataset.records:
            key = _identity(record)
            image_id = id_of.get(key)
            if image_id is None:
                # Split files are read as whitespace-separated columns, so an id holds no whitespace.
                stem = re.sub(r"\s+", "_", record.path.stem)
                image_id = unique_stem(
                    stem if stem.casefold() not in taken else f"{split_name}_{stem}", taken
                )
                file_name = image_id + record.path.suffix
                copy_picture(record.path, out / "JPEGImages" / file_name)
                xml = annotation_xml(record, file_name, class_names)
                write_text_atomically(out / "Annotations" / f"{image_id}.xml", xml)
                id_of[key] = image_id
            ids.append(image_id)
            report.pictures += 1
            report.boxes += len(record.boxes)
        split_file = out / "ImageSets" / "Main" / f"{split_name}.txt"
        write_text_atomically(split_file, "".join(f"{image_id}\n" for image_id in ids))
        written.append(report)
    (out / "Annotations").mkdir(parents=True, exist_ok=True)  # the layout, even with no picture at all
    (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
    write_text_atomically(out / "classes.txt", "".join(f"{name}\n" for name in class_names))
    return written


VOC_WRITER = Writer(
    name="voc",
    layout="Annotations/<id>.xml, JPEGImages/, ImageSets/Main/<split>.txt, classes.txt",
    write=write_voc,
)
