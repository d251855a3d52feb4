"""Pascal VOC: `Annotations/<id>.xml`, `JPEGImages/<id>.jpg`, `ImageSets/Main/<split>.txt`.

Box corners are taken as written (`xmin`..`xmax`, no 1-based shift), so a box's width is `xmax - xmin` as in
the usual VOC-to-COCO conversions. Class names, unless given, are every `<name>` found under `Annotations/`
sorted alphabetically, so each split of one dataset gets the same labels. XML is read with defusedxml: an
annotation file must not be able to make the reader fetch URLs or expand entities.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import parse as parse_xml

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
from ssd.data.pictures import PICTURE_SUFFIXES
from ssd.data.problems import DROPPED_BOX, SKIPPED_PICTURE, ProblemLog
from ssd.errors import DatasetError


def is_voc(root: Path) -> bool:
    return (root / "Annotations").is_dir() and (root / "JPEGImages").is_dir()


def voc_splits(root: Path) -> list[str]:
    main = root / "ImageSets" / "Main"
    return sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem) if main.is_dir() else []


def _split_ids(root: Path, split: str) -> list[str]:
    if split == "all":
        return sorted(p.stem for p in (root / "Annotations").glob("*.xml"))
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        known = ", ".join(voc_splits(root)) or "none"
        raise DatasetError(f"{split_file}: no such split file (splits found: {known}; 'all' takes every XML)")
    ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    return list(dict.fromkeys(ids))  # a repeated id would count its boxes twice


def _parse(path: Path) -> Element:
    try:
        return parse_xml(path).getroot()
    except ParseError as error:
        raise DatasetError(f"{path}: XML cannot be parsed ({error})") from None
    except DefusedXmlException as error:
        raise DatasetError(
            f"{path}: XML refused, it uses entities or DTDs ({type(error).__name__})"
        ) from None


def _text(element: Element | None, tag: str) -> str | None:
    child = element.find(tag) if element is not None else None
    return child.text.strip() if child is not None and child.text else None


def _class_names(root: Path, trees: dict[str, Element | None]) -> list[str]:
    for name in ("classes.txt", "labels.txt"):
        if (root / name).is_file():
            return [line.strip() for line in (root / name).read_text().splitlines() if line.strip()]
    names: set[str] = set()
    for xml_path in sorted((root / "Annotations").glob("*.xml")):
        tree = trees.get(xml_path.stem)
        if tree is None and xml_path.stem not in trees:
            try:
                tree = _parse(xml_path)
            except DatasetError:
                continue  # reported when (and if) its split is loaded
        if tree is not None:
            names.update(filter(None, (_text(obj, "name") for obj in tree.iter("object"))))
    if not names:
        raise DatasetError(f"{root / 'Annotations'}: no <object><name> found, so no class names")
    return sorted(names)


def _picture_path(root: Path, image_id: str, tree: Element) -> Path:
    images = root / "JPEGImages"
    file_name = _text(tree, "filename")
    if file_name and (images / file_name).is_file():
        return images / file_name
    for suffix in PICTURE_SUFFIXES:
        if (images / f"{image_id}{suffix}").is_file():
            return images / f"{image_id}{suffix}"
    return images / (file_name or f"{image_id}.jpg")


def _raw_boxes(tree: Element, index_of: dict[str, int], xml_file: str, problems: ProblemLog) -> list[RawBox]:
    boxes = []
    for number, obj in enumerate(tree.iter("object"), start=1):
        name = _text(obj, "name")
        where = f"object {number} '{name}'"
        if name not in index_of:
            known = ", ".join(index_of)
            problems.add(xml_file, f"{where}: unknown class name (classes: {known})", DROPPED_BOX)
            continue
        bndbox = obj.find("bndbox")
        try:
            xyxy = tuple(float(_text(bndbox, tag) or "") for tag in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            problems.add(xml_file, f"{where}: <bndbox> is missing or not numbers", DROPPED_BOX)
            continue
        difficult = (_text(obj, "difficult") or "0") not in ("0", "false", "False")
        # VOC has no crowd regions; `ssd data convert` writes COCO's as <iscrowd>1</iscrowd> to keep them.
        iscrowd = (_text(obj, "iscrowd") or "0") not in ("0", "false", "False")
        boxes.append(RawBox(xyxy, index_of[name], where, iscrowd=iscrowd, difficult=difficult))
    return boxes


def load_voc(
    root: Path,
    split: str = "trainval",
    *,
    class_names: list[str] | None = None,
    strict: bool = False,
    verify: str = "header",
    transform: Transform | None = None,
) -> DetectionDataset:
    root = Path(root)
    problems = ProblemLog(f"{root} ({split})", strict=strict)
    ids = _split_ids(root, split)
    trees: dict[str, Element | None] = {}
    for image_id in ids:
        xml_path = root / "Annotations" / f"{image_id}.xml"
        if not xml_path.is_file():
            problems.add(
                str(xml_path), f"listed in split '{split}' but there is no such file", SKIPPED_PICTURE
            )
            trees[image_id] = None
            continue
        try:
            trees[image_id] = _parse(xml_path)
        except DatasetError as error:
            problems.add(str(xml_path), str(error).split(": ", 1)[1], SKIPPED_PICTURE)
            trees[image_id] = None
    names = list(class_names) if class_names else _class_names(root, trees)
    index_of = {name: label for label, name in enumerate(names, start=1)}

    records: list[Record] = []
    for image_id, numeric_id in zip(ids, numeric_image_ids(ids), strict=True):
        tree = trees[image_id]
        if tree is None:
            continue
        xml_file = str(root / "Annotations" / f"{image_id}.xml")
        path = _picture_path(root, image_id, tree)
        if not path.is_file():
            problems.add(str(path), f"picture named by {xml_file} is missing", SKIPPED_PICTURE)
            continue
        size = tree.find("size")
        try:
            stated = (int(float(_text(size, "height") or 0)), int(float(_text(size, "width") or 0)))
        except ValueError:
            stated = (0, 0)
        size = checked_picture_size(path, stated, verify, xml_file, "<size>", problems)
        if size is None:
            continue
        height, width = size
        raw = _raw_boxes(tree, index_of, xml_file, problems)
        file_name = str(path.relative_to(root / "JPEGImages"))
        records.append(checked_record(path, file_name, numeric_id, height, width, raw, xml_file, problems))
    problems.finish()
    return DetectionDataset(records, names, f"{root} ({split})", problems, transform)


def _load(root: Path, split: str, options: LoadOptions) -> DetectionDataset:
    return load_voc(
        root,
        split,
        class_names=options.class_names,
        strict=options.strict,
        verify=options.verify,
        transform=options.transform,
    )


VOC = DataFormat(
    name="voc",
    layout="Pascal VOC (Annotations/, JPEGImages/, ImageSets/Main/)",
    recognises=lambda root, split: root.is_dir() and is_voc(root),
    splits=voc_splits,
    load=_load,
)
