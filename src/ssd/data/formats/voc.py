"""Pascal VOC XML, in the layouts labelling tools leave it:

- VOC itself: `Annotations/<id>.xml`, `JPEGImages/<id>.jpg`, and `ImageSets/Main/<split>.txt` listing the ids
  of each split (without it, the dataset has no splits);
- the same in lower case or with `images/` (`annotations/` + `images/`), optionally with one subfolder per
  split in both (`annotations/train/`, `images/train/`);
- LabelImg's: each picture's XML beside it, in one folder or in one folder per split (`train/`, `test/`).

Box corners are taken as written (`xmin`..`xmax`, no 1-based shift), so a box's width is `xmax - xmin` as in
the usual VOC-to-COCO conversions. Class names, unless given, come from a `classes.txt` (or `labels.txt`)
beside the dataset, else are every `<name>` found in its XMLs sorted alphabetically, so each split of one
dataset gets the same labels. A picture is the one `<filename>` names in the pictures folder, else the one with
the XML's name and any picture ending; a `<filename>` that leaves the folder is refused. XML is read with
defusedxml: an annotation file must not be able to make the reader fetch URLs or expand entities.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
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
from ssd.data.paths import child_folder, inside, is_file, read_text_lines
from ssd.data.pictures import PICTURE_SUFFIXES
from ssd.data.problems import DROPPED_BOX, SKIPPED_PICTURE, ProblemLog
from ssd.data.splits import WHOLE
from ssd.errors import DatasetError

_ANNOTATION_FOLDERS = ("Annotations",)
_PICTURE_FOLDERS = ("JPEGImages", "images")
# VOC's per-class lists (`cat_train.txt`, `cat_trainval.txt`) beside the split files: not splits.
_CLASS_SPLIT_FILE = re.compile(r".+_(train|val|trainval|test)")


@dataclass(frozen=True)
class _Part:
    """Where one split's XMLs and pictures are; `ids`: the split's ids in order (None: every XML there)."""

    annotations: Path
    pictures: Path
    ids: list[str] | None = None


def _has_file(folder: Path, suffixes: tuple[str, ...]) -> bool:
    # Names first, then the entry's cached type: a COCO folder of 100,000 pictures costs no stat calls.
    with os.scandir(folder) as entries:
        return any(e.name.lower().endswith(suffixes) and e.is_file() for e in entries)


def _has_xml(folder: Path) -> bool:
    return _has_file(folder, (".xml",))


def _xml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".xml")


def _voc_folders(root: Path) -> tuple[Path, Path] | None:
    """(annotations, pictures) of the VOC-like layouts, whatever their case."""
    annotations = child_folder(root, _ANNOTATION_FOLDERS)
    pictures = child_folder(root, _PICTURE_FOLDERS)
    if annotations is None or pictures is None:
        return None
    if _has_xml(annotations) or any(_has_xml(d) for d in annotations.iterdir() if d.is_dir()):
        return annotations, pictures
    return None


def _split_files(root: Path) -> Path | None:
    image_sets = child_folder(root, ("ImageSets",))
    return child_folder(image_sets, ("Main",)) if image_sets is not None else None


def _labelimg_split_folders(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and _has_xml(d) and _has_pictures(d))


def _has_pictures(folder: Path) -> bool:
    return _has_file(folder, PICTURE_SUFFIXES)


def is_voc(root: Path) -> bool:
    if not root.is_dir():
        return False
    if _voc_folders(root) is not None:
        return True
    return (_has_xml(root) and _has_pictures(root)) or bool(_labelimg_split_folders(root))


def voc_splits(root: Path) -> list[str]:
    folders = _voc_folders(root)
    if folders is None:
        return [d.name for d in _labelimg_split_folders(root)]
    main = _split_files(root)
    if main is not None:
        listed = sorted(p.stem for p in main.glob("*.txt") if not _CLASS_SPLIT_FILE.fullmatch(p.stem))
        if listed:
            return listed
    annotations, _ = folders
    return sorted(d.name for d in annotations.iterdir() if d.is_dir() and _has_xml(d))


def _parts(root: Path, split: str) -> list[_Part]:
    """Where the XMLs and pictures of `split` are; DatasetError naming the splits found when it is not one."""
    folders = _voc_folders(root)
    splits = voc_splits(root)
    if split == WHOLE:
        if folders is None:
            if _has_xml(root):
                return [_Part(root, root)]
            return [_Part(d, d) for d in _labelimg_split_folders(root)]
        annotations, pictures = folders
        if _has_xml(annotations):
            return [_Part(annotations, pictures)]
        return [_Part(annotations / s, pictures / s) for s in splits]
    if split not in splits:
        raise DatasetError(
            f"{root}: no split '{split}' (splits found: {', '.join(splits) or 'none'}; '{WHOLE}' takes every XML)"
        )
    if folders is None:
        return [_Part(root / split, root / split)]
    annotations, pictures = folders
    main = _split_files(root)
    if main is not None and (main / f"{split}.txt").is_file():
        lines = read_text_lines(main / f"{split}.txt")
        ids = list(dict.fromkeys(line.split()[0] for line in lines if line.strip()))  # a repeat counts twice
        return [_Part(annotations, pictures, ids)]
    return [_Part(annotations / split, pictures / split)]


def _parse(path: Path) -> Element:
    try:
        return parse_xml(path).getroot()
    except ParseError as error:
        raise DatasetError(f"{path}: XML cannot be parsed ({error})") from None
    except DefusedXmlException as error:
        raise DatasetError(
            f"{path}: XML refused, it uses entities or DTDs ({type(error).__name__})"
        ) from None
    # The encoding a declaration names is looked up as a Python codec: an unknown one (or one that is not
    # a text encoding, like rot13) is a LookupError, one expat cannot take (utf-7) a ValueError, one that
    # fails on the text (idna, punycode) a UnicodeError. After DefusedXmlException, itself a ValueError.
    except (LookupError, ValueError) as error:
        raise DatasetError(f"{path}: XML cannot be parsed (its declared encoding: {error})") from None
    except OSError as error:
        raise DatasetError(f"{path}: cannot be read ({error.strerror or error})") from None


def _text(element: Element | None, tag: str) -> str | None:
    child = element.find(tag) if element is not None else None
    return child.text.strip() if child is not None and child.text else None


def _class_names(root: Path, trees: dict[Path, Element | None]) -> list[str]:
    for name in ("classes.txt", "labels.txt"):
        if (root / name).is_file():
            return [line.strip() for line in read_text_lines(root / name) if line.strip()]
    names: set[str] = set()
    for part in _parts(root, WHOLE):
        for xml_path in _xml_files(part.annotations):
            tree = trees.get(xml_path)
            if tree is None and xml_path not in trees:
                try:
                    tree = _parse(xml_path)
                except DatasetError:
                    continue  # reported when (and if) its split is loaded
            if tree is not None:
                names.update(filter(None, (_text(obj, "name") for obj in tree.iter("object"))))
    if not names:
        raise DatasetError(f"{root}: no <object><name> found in its XML files, so no class names")
    return sorted(names)


class _PictureFinder:
    """The picture of an XML in one folder: the file `<filename>` names, else the XML's name with any ending
    (in any case: LabelImg keeps `.JPG` as the camera wrote it)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._by_stem: dict[str, Path] | None = None

    def find(self, stem: str, file_name: str | None, xml_file: str, problems: ProblemLog) -> Path | None:
        if file_name:
            named = inside(self.folder, file_name)
            if named is None:
                problems.add(
                    xml_file,
                    f"<filename> {file_name[:80]!r} leaves the pictures folder; refused",
                    SKIPPED_PICTURE,
                )
                return None
            if is_file(named):
                return named
        if self._by_stem is None:
            pictures = (
                sorted(
                    p for p in self.folder.iterdir() if p.is_file() and p.suffix.lower() in PICTURE_SUFFIXES
                )
                if self.folder.is_dir()
                else []
            )
            self._by_stem = {}
            for picture in pictures:
                self._by_stem.setdefault(picture.stem, picture)
        found = self._by_stem.get(stem)
        if found is None and file_name:
            problems.add(
                str(self.folder / file_name), f"picture named by {xml_file} is missing", SKIPPED_PICTURE
            )
        elif found is None:
            problems.add(xml_file, f"no picture called {stem!r} in {self.folder}", SKIPPED_PICTURE)
        return found


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
    max_pixels: int | None = None,
) -> DetectionDataset:
    root = Path(root)
    source = f"{root} ({split})"
    problems = ProblemLog(source, strict=strict)
    entries: list[tuple[Path, _PictureFinder]] = []  # (XML, the finder of its picture), in the split's order
    for part in _parts(root, split):
        finder = _PictureFinder(part.pictures)
        if part.ids is None:
            entries += [(xml_path, finder) for xml_path in _xml_files(part.annotations)]
            continue
        for image_id in part.ids:
            xml_path = inside(part.annotations, f"{image_id}.xml")
            if xml_path is None or not is_file(xml_path):
                problems.add(
                    str(part.annotations / f"{image_id}.xml"),
                    f"listed in split '{split}' but there is no such file",
                    SKIPPED_PICTURE,
                )
                continue
            entries.append((xml_path, finder))
    trees: dict[Path, Element | None] = {}
    for xml_path, _ in entries:
        try:
            trees[xml_path] = _parse(xml_path)
        except DatasetError as error:
            problems.add(str(xml_path), str(error).split(": ", 1)[1], SKIPPED_PICTURE)
            trees[xml_path] = None
    names = list(class_names) if class_names else _class_names(root, trees)
    index_of = {name: label for label, name in enumerate(names, start=1)}

    records: list[Record] = []
    ids = numeric_image_ids([xml_path.stem for xml_path, _ in entries])
    for (xml_path, finder), numeric_id in zip(entries, ids, strict=True):
        tree = trees[xml_path]
        if tree is None:
            continue
        xml_file = str(xml_path)
        path = finder.find(xml_path.stem, _text(tree, "filename"), xml_file, problems)
        if path is None:
            continue
        size = tree.find("size")
        stated = None if size is None else (_text(size, "height"), _text(size, "width"))
        picture = checked_picture_size(path, stated, verify, xml_file, "<size>", problems, max_pixels)
        if picture is None:
            continue
        raw = _raw_boxes(tree, index_of, xml_file, problems)
        file_name = path.relative_to(finder.folder).as_posix()
        records.append(
            checked_record(
                path,
                file_name,
                numeric_id,
                picture.height,
                picture.width,
                raw,
                xml_file,
                problems,
                picture.orient,
            )
        )
    problems.finish()
    return DetectionDataset(records, names, source, problems, transform, max_pixels=max_pixels)


def _load(root: Path, split: str, options: LoadOptions) -> DetectionDataset:
    return load_voc(
        root,
        split,
        class_names=options.class_names,
        strict=options.strict,
        verify=options.verify,
        transform=options.transform,
        max_pixels=options.max_pixels,
    )


VOC = DataFormat(
    name="voc",
    layout=(
        "Pascal VOC (Annotations/ + JPEGImages/ [+ ImageSets/Main/], annotations/ + images/, "
        "or each picture's XML beside it)"
    ),
    recognises=lambda root, split: is_voc(root),
    splits=voc_splits,
    load=_load,
)
