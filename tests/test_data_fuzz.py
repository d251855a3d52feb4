"""Fuzzing the dataset readers with broken and hostile annotation files, one test per format.

Each example takes a real annotation file (from ../shared/data when it is there, else one the data tests
write), mutates it (truncated, bytes flipped or inserted, values of the wrong type, huge or non-finite
numbers, missing or duplicated parts, deep nesting, text that is not UTF-8) and builds the dataset. The
contract: the reader raises a DatasetError naming the broken file, or returns a dataset whose problems are
counted in one DataWarning and whose boxes are finite, upright and inside their pictures. Nothing else: no
other exception, no hang. The examples are derandomized, so a run in CI is reproducible. The pictures are
one-colour JPEGs of the sizes the annotations state (a few KB each; the readers read only their headers), so
that real boxes stay inside them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import signal
import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import torch
import yaml
from data_writers import voc_xml, write_coco, write_picture, write_voc, write_yolo
from hypothesis import HealthCheck, configuration, given, settings
from hypothesis import strategies as st
from PIL import Image

from ssd.data import DataWarning, build_dataset
from ssd.data.dataset import numeric_image_ids
from ssd.errors import DatasetError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Small enough that the whole file runs in a few seconds on 2 cores; derandomized so CI runs the same
# examples every time, and database-free so nothing is left in the repository.
# SSD_FUZZ_EXAMPLES=5000 runs a longer, random search (for looking for new failures by hand).
LONG_RUN = os.environ.get("SSD_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(LONG_RUN or 200),
    deadline=None,
    derandomize=not LONG_RUN,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# One example may take this long before it counts as a hang.
HANG_SECONDS = 10

# A file name longer than file systems allow (ENAMETOOLONG).
LONG_NAME = "x" * 300 + ".jpg"

# Values of the wrong type or out of range, for the parsed JSON and YAML.
HOSTILE_VALUES = [
    LONG_NAME,
    None,
    True,
    False,
    0,
    -1,
    2**31,
    2**70,
    -(2**70),
    1e308,
    -1e308,
    1e-320,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    " ",
    "0",
    "1e400",
    "NaN",
    "abc",
    "\x00",
    "\ud800",  # a lone surrogate: valid JSON (as an escape), not encodable as a file name
    "é.jpg",
    "../../outside.jpg",
    "/etc/passwd",
    "C:\\photos\\a.jpg",
    [],
    [None],
    [1, 2, 3, 4],
    [[1, 2, 3, 4]],
    {},
    {"id": 1},
    {"a": {"b": {"c": []}}},
]

# Text written into the JSON as it stands, for what Python's json.dumps never writes.
RAW_JSON = [
    "1e400",
    "-1e400",
    "1e-400",
    "NaN",
    "-Infinity",
    "1" * 5000,  # an integer longer than Python's 4300-digit conversion limit
    "-0",
    "[" * 990 + "]" * 990,
    "[" * 100_000 + "]" * 100_000,
    '{"a":' * 990 + "1" + "}" * 990,
]

# Numbers in annotation text, replaced by these.
HOSTILE_NUMBERS = [
    b"1e400",
    b"-1e400",
    b"1e308",
    b"-1e308",
    str(2**70).encode(),
    b"NaN",
    b"nan",
    b"Infinity",
    b"-inf",
    b"-0",
    b"0",
    b"-1",
    b"1e-400",
    b"0x10",
    b"1_0",
    "\u0661\u0662".encode(),  # Arabic-Indic digits, which float() reads
    b"",
    b"abc",
    b"1" * 5000,
]

# Bytes inserted anywhere: broken UTF-8, a byte-order mark, a zero byte, markup and structure.
INSERTIONS = [
    b"\xff",
    b"\xc3\x28",
    b"\xed\xa0\x80",  # a UTF-8-encoded surrogate
    b"\xef\xbb\xbf",
    b"\x00",
    b"\r",
    b"\n",
    b"<",
    b"&",
    b"&bogus;",
    b"]]>",
    b'<!DOCTYPE x [<!ENTITY a "aaaa">]>',
    b"{",
    b"[",
    b'"',
    b",",
    b":",
    b"- ",
    b"*a",
    b"&a ",
    b"!!python/object:os.system ",
    b"\t",
]

NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


@pytest.fixture(autouse=True)
def _hypothesis_files_outside_the_repository(tmp_path_factory):
    """Hypothesis caches Unicode tables and source constants in ./.hypothesis even without an example
    database; here they go to pytest's temporary folder (unless HYPOTHESIS_STORAGE_DIRECTORY says where)."""
    if os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        yield
        return
    configuration.set_hypothesis_home_dir(tmp_path_factory.getbasetemp() / "hypothesis")
    yield
    configuration.set_hypothesis_home_dir(None)  # back to the default, for other test files


@contextlib.contextmanager
def no_hang(seconds: int = HANG_SECONDS):
    """Turn an example that runs past `seconds` into a failure instead of a stuck test run."""
    if not hasattr(signal, "SIGALRM"):  # Windows: no alarm, the test simply runs
        yield
        return

    def _hang(signum, frame):
        raise AssertionError(f"the reader ran for more than {seconds} s (a hang)")

    previous = signal.signal(signal.SIGALRM, _hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check_contract(root: Path, split: str, offending: list[str], sizes: dict[Path, tuple[int, int]]) -> None:
    """Build the dataset and check the readers' contract; `offending`: names a DatasetError may give,
    `sizes`: each picture's (height, width)."""
    try:
        with no_hang(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset = build_dataset(root, split)
    except DatasetError as error:
        assert any(name in str(error) for name in offending), f"the error names no broken file: {error}"
        return
    shown = [w for w in caught if issubclass(w.category, DataWarning)]
    problems = dataset.problems
    assert len(shown) == (1 if len(problems) else 0), [str(w.message) for w in shown]
    if problems:
        assert problems.summary() in str(shown[0].message), "the warning counts the problems"
    for problem in problems.problems:
        assert problem.file.startswith(str(root)), f"the problem names no file of the dataset: {problem}"
    for record in dataset.records:
        assert (record.height, record.width) == sizes[record.path.resolve()], record.path
        boxes = record.boxes
        assert boxes.dtype == torch.float32 and boxes.shape == (len(record.labels), 4)
        assert bool(torch.isfinite(boxes).all()), boxes
        assert bool((boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all()), boxes
        assert bool((boxes[:, :2] >= 0).all()), boxes
        assert bool((boxes[:, 2] <= record.width).all() and (boxes[:, 3] <= record.height).all()), boxes
        assert all(1 <= label <= len(dataset.class_names) for label in record.labels.tolist())
        assert bool(torch.isfinite(record.area).all()) and len(record.area) == len(boxes)
    assert len(dataset.targets) == len(dataset)


def picture_sizes(folder: Path) -> dict[Path, tuple[int, int]]:
    sizes = {}
    for path in folder.rglob("*.jpg"):
        with Image.open(path) as picture:
            sizes[path.resolve()] = (picture.height, picture.width)
    return sizes


# Mutations of raw bytes, for every format.


@st.composite
def byte_mutation(draw, data: bytes) -> bytes:
    """`data` with one to three raw edits, or emptied, or re-encoded."""
    kind = draw(st.sampled_from(["edits", "edits", "edits", "empty", "utf16", "latin1", "bom"]))
    if kind == "empty":
        return b""
    if kind == "utf16":
        return data.decode("utf-8").encode("utf-16")
    if kind == "latin1":  # the text written by a tool that does not use UTF-8
        return data.decode("utf-8").replace("a", "\xe9").encode("latin-1", "replace")
    if kind == "bom":
        return b"\xef\xbb\xbf" + data
    for _ in range(draw(st.integers(1, 3))):
        data = draw(one_edit(data))
    return data


@st.composite
def one_edit(draw, data: bytes) -> bytes:
    at = draw(st.integers(0, len(data)))
    edit = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "repeat", "number"]))
    if edit == "truncate":
        return data[:at]
    if edit == "flip" and at < len(data):
        byte = draw(st.integers(0, 255) | st.sampled_from([data[at] ^ (1 << bit) for bit in range(8)]))
        return data[:at] + bytes([byte]) + data[at + 1 :]
    if edit == "insert":
        inserted = draw(st.sampled_from(INSERTIONS) | st.binary(min_size=1, max_size=8))
        return data[:at] + inserted + data[at:]
    if edit == "delete":
        return data[:at] + data[at + draw(st.integers(1, 64)) :]
    if edit == "repeat":
        end = min(len(data), at + draw(st.integers(1, 200)))
        return data[:end] + data[at:end] * draw(st.integers(1, 3)) + data[end:]
    if edit == "number":
        matches = list(NUMBER.finditer(data))
        if matches:
            match = draw(st.sampled_from(matches))
            return data[: match.start()] + draw(st.sampled_from(HOSTILE_NUMBERS)) + data[match.end() :]
    return data


# Mutations of a parsed structure (COCO's JSON, YOLO's data.yaml).


def hostile_value(raw: list[str]):
    """A wrong or out-of-range value; a `raw` text stands for itself in the written file."""
    return st.one_of(
        st.sampled_from(HOSTILE_VALUES),
        st.sampled_from([Raw(text) for text in raw]) if raw else st.nothing(),
        st.integers(),
        st.floats(),
        # No "/" or "~": as a YOLO split entry they would make the reader walk the whole disk or home
        # folder, which is the user's to ask for (data.yaml paths may be absolute).
        st.text(st.characters(blacklist_characters="/~"), max_size=8),
        st.lists(st.integers() | st.text(max_size=3), max_size=5),
    )


class Raw:
    """Text written into the file verbatim in place of a value (1e400, deep nesting, ...)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r}{'...' if len(self.text) > 40 else ''})"


@st.composite
def structure_mutation(draw, document, raw: list[str]):
    """A copy of `document` with one place in it replaced (by a hostile value, perhaps a Raw one),
    removed, duplicated, swapped with another or nested deeply."""
    document = copy.deepcopy(document)  # examples must not share edits
    places = list(_places(document))
    if draw(st.booleans()):  # any place, so mostly where the data is: an annotation's bbox, an image's size
        parent, key = draw(st.sampled_from(places))
    else:  # a walk from the top, so as often a whole list ("images": null) as a value deep inside
        parent, key = None, None
        node = document
        while isinstance(node, (dict, list)) and node and (parent is None or draw(st.booleans())):
            parent, key = (
                node,
                draw(st.sampled_from(list(node) if isinstance(node, dict) else range(len(node)))),
            )
            node = parent[key]
        if parent is None:
            return draw(hostile_value(raw))
    edit = draw(st.sampled_from(["replace", "replace", "replace", "remove", "duplicate", "nest", "swap"]))
    if edit == "remove":
        del parent[key]
    elif edit == "duplicate" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))  # duplicated ids, duplicated entries
    elif edit == "nest":
        value = parent[key]
        for _ in range(draw(st.integers(1, 50))):
            value = [value] if draw(st.booleans()) else {"x": value}
        parent[key] = value
    elif edit == "swap" and isinstance(parent, dict):
        other = draw(st.sampled_from(list(parent)))
        parent[key], parent[other] = parent[other], parent[key]
    else:
        parent[key] = draw(hostile_value(raw))
    return document


def _places(document):
    """(container, key) of every value inside `document`."""
    stack = [document]
    while stack:
        node = stack.pop()
        keys = node if isinstance(node, dict) else range(len(node)) if isinstance(node, list) else ()
        for key in keys:
            yield node, key
            stack.append(node[key])


def dump_json(document) -> bytes:
    """JSON text of a mutated document, with its Raw values written verbatim."""
    raws: dict[str, str] = {}

    def encode(value):
        if isinstance(value, Raw):
            token = f"@RAW{len(raws)}@"
            raws[token] = value.text
            return token
        raise TypeError(type(value).__name__)

    text = json.dumps(document, default=encode)
    for token, raw in raws.items():
        text = text.replace(f'"{token}"', raw)
    return text.encode()


# COCO.


def _coco_source(root: Path) -> tuple[Path, bytes]:
    """A COCO layout under `root` (annotations/instances_val2017.json, val2017/), from coco_mini's first
    pictures when ../shared has them; the JSON and its text."""
    real = SHARED_DATA / "coco_mini" / "annotations" / "instances_val2017.json"
    if real.is_file():
        whole = json.loads(real.read_text())
        images = whole["images"][:10]
        ids = {image["id"] for image in images}
        # Without segmentation polygons, which the reader does not look at: mutations hit what it reads.
        annotations = [
            {key: value for key, value in annotation.items() if key != "segmentation"}
            for annotation in whole["annotations"]
            if annotation["image_id"] in ids
        ]
        categories = whole["categories"]
        extra = {"info": whole.get("info"), "licenses": whole.get("licenses", [])[:2]}
    else:
        images = [
            {"id": i, "file_name": f"{i:04d}.jpg", "width": 64, "height": 48, "license": 1} for i in (1, 2, 3)
        ]
        annotations = [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1.5, 2, 10, 20], "area": 200, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [5, 5, 30, 40], "area": 1200, "iscrowd": 1},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 64, 48], "area": 3072, "iscrowd": 0},
        ]
        categories = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
        extra = {}
    json_path = write_coco(root, "val2017", images, annotations, categories)
    text = json.dumps({**extra, "images": images, "annotations": annotations, "categories": categories})
    return json_path, text.encode()


def test_coco_reader_survives_mutated_json(tmp_path):
    root = tmp_path / "coco"
    json_path, original = _coco_source(root)
    sizes = picture_sizes(root)
    document = json.loads(original)
    assert len(build_dataset(root, "val")) == len(document["images"])  # the source itself reads cleanly

    @FUZZ
    @given(
        st.one_of(
            byte_mutation(original),
            structure_mutation(document, RAW_JSON).map(dump_json),
            structure_mutation(document, RAW_JSON).map(dump_json),  # twice: most raw edits just break JSON
        )
    )
    def example(mutated: bytes):
        json_path.write_bytes(mutated)
        check_contract(root, "val", [json_path.name], sizes)

    example()


# Pascal VOC.


def _voc_source(root: Path) -> list[Path]:
    """A VOC layout under `root` with three XMLs (BCCD's when ../shared has them), their pictures and
    ImageSets/Main/train.txt; the files a mutation may hit."""
    real = SHARED_DATA / "bccd" / "BCCD" / "Annotations"
    if real.is_dir():
        xmls = sorted(real.glob("*.xml"))[:3]
        (root / "Annotations").mkdir(parents=True)
        for xml in xmls:
            shutil.copy(xml, root / "Annotations" / xml.name)
            tree = ElementTree.parse(xml).getroot()
            size = tree.find("size")
            width, height = int(size.findtext("width")), int(size.findtext("height"))
            write_picture(root / "JPEGImages" / tree.findtext("filename"), width, height)
        split_file = root / "ImageSets" / "Main" / "train.txt"
        split_file.parent.mkdir(parents=True)
        split_file.write_text("".join(f"{xml.stem}\n" for xml in xmls))
    else:
        write_voc(
            root,
            {
                "0001": [("cat", 1, 2, 30, 40), ("dog", 10, 10, 60, 45, 1)],
                "0002": [("dog", 0, 0, 64, 48)],
                "0003": [("cat", 5.5, 6.5, 20, 20)],
            },
        )
    return [*sorted((root / "Annotations").glob("*.xml")), root / "ImageSets" / "Main" / "train.txt"]


@st.composite
def xml_mutation(draw, data: bytes) -> bytes:
    """The XML with one element removed, duplicated, renamed, given hostile text or deep nesting, or with
    a declaration naming an odd encoding."""
    tree = ElementTree.fromstring(data)  # our own source file, parsed to pick an element
    elements = list(tree.iter())
    element = draw(st.sampled_from(elements))
    parents = {child: parent for parent in elements for child in parent}
    edit = draw(
        st.sampled_from(["text", "text", "remove", "duplicate", "rename", "nest", "nest_object", "encoding"])
    )
    if edit == "text":
        texts = [n.decode() for n in HOSTILE_NUMBERS] + [LONG_NAME, "../x.jpg", "/etc/passwd", ".", ""]
        element.text = draw(st.sampled_from(texts) | st.text(max_size=12))
        element.text = "".join(
            ch for ch in element.text if ch.isprintable() and not 0xD800 <= ord(ch) < 0xE000
        )
    elif edit == "remove" and element in parents:
        parents[element].remove(element)
    elif edit == "duplicate" and element in parents:
        parents[element].append(element)
    elif edit == "rename":
        element.tag = draw(st.sampled_from(["object", "bndbox", "size", "name", "OBJECT", "x", "filename"]))
    elif edit == "nest_object":  # an object inside an object, a bndbox inside a bndbox
        element.append(ElementTree.fromstring(ElementTree.tostring(element)))
    text = ElementTree.tostring(tree)
    if edit == "nest":
        depth = draw(st.sampled_from([10, 1000, 100_000]))
        tag = draw(st.sampled_from([b"object", b"x"]))
        closing = text.rindex(b"</")  # inside the root element, before it closes
        text = text[:closing] + b"<%s>" % tag * depth + b"</%s>" % tag * depth + text[closing:]
    if edit == "encoding":
        encoding = draw(st.sampled_from(XML_ENCODINGS))
        text = b'<?xml version="1.0" encoding="%s"?>\n' % encoding.encode() + text
    return text


# Encodings an XML declaration may name: wrong ones, multi-byte ones expat cannot take, Python codecs that
# are not text encodings, and names no codec has.
XML_ENCODINGS = ["utf-8", "latin-1", "utf-16", "utf-32", "utf-7", "cp1252", "hz", "idna", "punycode"]
XML_ENCODINGS += ["rot13", "base64", "zlib", "unicode_escape", "bogus", ""]


def test_voc_reader_survives_mutated_xml(tmp_path):
    root = tmp_path / "voc"
    files = _voc_source(root)
    originals = {path: path.read_bytes() for path in files}
    sizes = picture_sizes(root)
    assert len(build_dataset(root, "train")) == len(files) - 1

    @FUZZ
    @given(st.data())
    def example(data):
        target = data.draw(st.sampled_from(files), label="file")
        original = originals[target]
        mutations = byte_mutation(original)
        if target.suffix == ".xml":
            mutations = mutations | xml_mutation(original)
        mutated = data.draw(mutations, label="mutated")
        for path, text in originals.items():
            path.write_bytes(text)
        target.write_bytes(mutated)
        check_contract(root, "train", [target.name], sizes)

    example()


# YOLO.

# YAML text that PyYAML builds into something odd, or refuses with errors of many kinds.
RAW_YAML = [
    "2001-13-01",  # a date that is not one
    "!!float abc",
    "!!timestamp x",
    "!!int 0x",
    "!!binary xx",
    "!!python/object/apply:os.system ['true']",
    "[" * 3000 + "]" * 3000,
    "~nosuchuser/images",  # a home folder that does not exist
    "*undefined",
    "&a [*a]",
    "{[1]: 2}",
    "!!set {a: 1}",
    ".nan",
    "-.inf",
    "0x1F",
    "'unterminated",
    "{0: a, 2: c}",
    "{0: [x], 1: {y: z}}",
    "data.yaml",  # a file as a split entry is a list of pictures: this one lists none
    "[train/images, train/labels, .]",
    LONG_NAME,
]


def _yolo_source(root: Path) -> list[Path]:
    """A Roboflow YOLO layout under `root` (train/images, train/labels, data.yaml) with three label files
    (chess's when ../shared has them); the files a mutation may hit."""
    real = SHARED_DATA / "chess"
    if (real / "data.yaml").is_file():
        labels = sorted((real / "train" / "labels").glob("*.txt"))[:3]
        (root / "train" / "labels").mkdir(parents=True)
        for label in labels:
            shutil.copy(label, root / "train" / "labels" / label.name)
            with Image.open(real / "train" / "images" / f"{label.stem}.jpg") as picture:
                width, height = picture.size
            write_picture(root / "train" / "images" / f"{label.stem}.jpg", width, height)
        shutil.copy(real / "data.yaml", root / "data.yaml")
    else:
        write_yolo(
            root,
            "train",
            {"a": "0 0.5 0.5 0.2 0.4\n1 0.1 0.1 0.2 0.2\n", "b": "1 0.1 0.2 0.5 0.2 0.3 0.8\n", "c": ""},
            names=["cat", "dog"],
            layout="roboflow",
        )
    # A list of the same pictures, which the data.yaml names instead of the folder when it is fuzzed.
    pictures = sorted((root / "train" / "images").glob("*.jpg"))
    (root / LIST_FILE).write_text("".join(f"train/images/{picture.name}\n" for picture in pictures))
    return [*sorted((root / "train" / "labels").glob("*.txt")), root / "data.yaml"]


LIST_FILE = "train.txt"

# Names a list file may give a picture: leaving the dataset, too long, a folder, not a picture, digits that
# are not decimal ("²" is a digit to str.isdigit, but int() refuses it).
LISTED_NAMES = [
    "../outside.jpg",
    "/etc/passwd",
    "C:\\photos\\a.jpg",
    "\\\\server\\share\\a.jpg",
    LONG_NAME,
    "train/images",
    "train/images/",
    "data.yaml",
    "train/images/a\u00b2.jpg",
    "train/images/\u0661.jpg",
    "images",
    ".",
    "~/a.jpg",
    "train/images/missing.jpg",
]


@st.composite
def list_mutation(draw, data: bytes) -> bytes:
    """The list file with a line replaced by an odd name, or repeated."""
    lines = data.decode().splitlines()
    number = draw(st.integers(0, len(lines) - 1))
    if draw(st.booleans()):
        lines[number] = draw(st.sampled_from(LISTED_NAMES) | st.text(max_size=12))
    else:
        lines += [lines[number]] * draw(st.integers(1, 3))
    return "\n".join(lines).encode()


@st.composite
def yaml_mutation(draw, data: bytes) -> bytes:
    """The data.yaml with one value changed in its parsed form, or written as odd YAML text."""
    document = yaml.safe_load(data)
    if draw(st.booleans()):
        mutated = draw(structure_mutation(document, []))
        return yaml.safe_dump(mutated, allow_unicode=False).encode()
    # The keys the reader reads, more often than the others.
    key = draw(st.sampled_from(["names", "names", "train", "train", "path", "val", "nc", *document]))
    lines = [line for line in data.decode().splitlines() if not line.startswith(f"{key}:")]
    if draw(st.integers(0, 9)) == 0:
        lines += alias_bomb(key)
    else:
        lines.append(f"{key}: {draw(st.sampled_from(RAW_YAML))}")
    return "\n".join(lines).encode()


def alias_bomb(key: str) -> list[str]:
    """YAML lines making `key` a list that holds a billion strings through nine levels of aliases: a few
    hundred bytes, which PyYAML builds as shared references, but which never ends when walked or printed."""
    lines = ["bomb0: &bomb0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"bomb{i}: &bomb{i} [" + ", ".join([f"*bomb{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return [*lines, f"{key}: *bomb8"]


@st.composite
def label_mutation(draw, data: bytes) -> bytes:
    """The label file with one field replaced, a field dropped or added, or a line repeated."""
    lines = data.decode().splitlines() or [""]
    number = draw(st.integers(0, len(lines) - 1))
    fields = lines[number].split()
    edit = draw(st.sampled_from(["field", "field", "drop", "add", "repeat", "long"]))
    at = draw(st.integers(0, max(0, len(fields) - 1)))
    hostile = draw(st.sampled_from([n.decode() for n in HOSTILE_NUMBERS]))
    if edit == "field" and fields:
        fields[at] = hostile
    elif edit == "drop" and fields:
        del fields[at]
    elif edit == "add":
        fields.insert(at, hostile)
    elif edit == "long":  # a polygon of many points
        fields += ["0.5"] * draw(st.sampled_from([2, 3, 1000]))
    lines[number] = " ".join(fields)
    if edit == "repeat":
        lines += [lines[number]] * draw(st.integers(1, 50))
    return "\n".join(lines).encode()


def test_yolo_reader_survives_mutated_labels_and_data_yaml(tmp_path):
    root = tmp_path / "yolo"
    files = _yolo_source(root)
    originals = {path: path.read_bytes() for path in [*files, root / LIST_FILE]}
    sizes = picture_sizes(root)
    assert len(build_dataset(root, "train")) == len(files) - 1
    # The data.yaml that reads the split from the list file, for examples that fuzz the list.
    listing = yaml.safe_dump({**yaml.safe_load(originals[root / "data.yaml"]), "train": LIST_FILE}).encode()

    @FUZZ
    @given(st.data())
    def example(data):
        # The data.yaml half the time: one file rules the whole dataset, the label files one picture each.
        choices = [files[-1]] * (len(files) - 1) + files[:-1] + [root / LIST_FILE]
        target = data.draw(st.sampled_from(choices), label="file")
        original = originals[target]
        if target.suffix == ".yaml":
            structured = yaml_mutation(original)
        elif target.name == LIST_FILE:
            structured = list_mutation(original)
        else:
            structured = label_mutation(original)
        mutated = data.draw(byte_mutation(original) | structured, label="mutated")
        for path, text in originals.items():
            path.write_bytes(text)
        if target.name == LIST_FILE:
            (root / "data.yaml").write_bytes(listing)
        target.write_bytes(mutated)
        # A data.yaml without the split asked for is answered about the dataset folder, naming its splits.
        check_contract(root, "train", [target.name, f"{root}: no split 'train'"], sizes)

    example()


# The failures the fuzzing found, one regular test each.


def _build(root, split="train"):
    with no_hang(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = build_dataset(root, split)
    return dataset, [w for w in caught if issubclass(w.category, DataWarning)]


def _coco(root: Path, image: dict, annotation: dict | None = None) -> Path:
    image = {"id": 1, "file_name": "a.jpg", **image}
    write_picture(root / "val" / "a.jpg", 64, 48)
    return write_coco(
        root,
        "val",
        [image],
        [annotation] if annotation else [],
        [{"id": 1, "name": "x"}],
        write_pictures=False,
    )


def test_coco_area_larger_than_its_picture_gives_the_box_area(tmp_path):
    annotation = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 20], "area": 1e308}
    _coco(tmp_path, {"width": 64, "height": 48}, annotation)
    dataset, caught = _build(tmp_path, "val")
    assert dataset.get_target(0)["area"].tolist() == [200.0], "1e308 would be infinite in float32"
    assert len(caught) == 1 and "has area 1e+308, more than the 64x48 picture" in str(caught[0].message)


def test_coco_picture_with_a_width_but_no_height_has_its_size_corrected(tmp_path):
    _coco(tmp_path, {"width": 64})
    dataset, caught = _build(tmp_path, "val")
    assert (dataset.records[0].height, dataset.records[0].width) == (48, 64)
    assert "which is not a picture size" in str(caught[0].message)


def test_names_too_long_for_the_file_system_are_missing_pictures(tmp_path):
    # COCO's file_name, VOC's <filename> and split list, YOLO's list file: each once raised ENAMETOOLONG.
    _coco(tmp_path / "coco", {"file_name": LONG_NAME, "width": 64, "height": 48})
    assert len(_build(tmp_path / "coco", "val")[0]) == 0
    voc = write_voc(tmp_path / "voc", {"a": [("cat", 1, 2, 30, 40)]})
    (voc / "Annotations" / "a.xml").write_text(voc_xml(LONG_NAME, 64, 48, [("cat", 1, 2, 30, 40)]))
    assert len(_build(voc)[0]) == 1, "a <filename> that cannot be is looked for by the XML's name"
    (voc / "ImageSets" / "Main" / "train.txt").write_text("a\n" + "y" * 300 + "\n")
    dataset, caught = _build(voc)
    assert len(dataset) == 1 and "listed in split 'train' but there is no such file" in str(caught[0].message)
    yolo = write_yolo(tmp_path / "yolo", "train", {"a": "0 0.5 0.5 0.2 0.2\n"}, names=["x"])
    (yolo / "list.txt").write_text(f"images/train/a.jpg\nimages/train/{LONG_NAME}\n")
    (yolo / "data.yaml").write_text("train: list.txt\nnames: [x]\n")
    dataset, caught = _build(yolo)
    assert len(dataset) == 1 and "picture not found" in str(caught[0].message)


def test_yolo_split_entry_too_long_for_the_file_system_is_an_error_naming_the_yaml(tmp_path):
    yolo = write_yolo(tmp_path, "train", {"a": ""}, names=["x"])
    (yolo / "data.yaml").write_text(f"train: {'y' * 300}\nnames: [x]\n")
    with pytest.raises(DatasetError, match="data.yaml: split entry 'yyy.*' names no folder or file"):
        build_dataset(yolo, "train")


@pytest.mark.parametrize("encoding", ["bogus", "rot13", "utf-7", "utf-32", "idna", "punycode"])
def test_voc_xml_declaring_an_unusable_encoding_skips_its_picture(tmp_path, encoding):
    voc = write_voc(tmp_path, {"a": [("cat", 1, 2, 30, 40)], "b": [("cat", 1, 2, 30, 40)]})
    xml = voc / "Annotations" / "a.xml"
    xml.write_bytes(f'<?xml version="1.0" encoding="{encoding}"?>'.encode() + xml.read_bytes())
    dataset, caught = _build(voc)
    assert len(dataset) == 1 and f"{xml}: XML cannot be parsed" in str(caught[0].message)


@pytest.mark.parametrize(
    "value", ["2001-13-01", "!!float abc", "!!timestamp x", "!!int 0x", "[" * 3000 + "]" * 3000]
)
def test_data_yaml_that_pyyaml_cannot_build_is_an_error_naming_it(tmp_path, value):
    # PyYAML raises ValueError, AttributeError or RecursionError for these, not YAMLError.
    yolo = write_yolo(tmp_path, "train", {"a": ""}, names=["x"])
    (yolo / "data.yaml").write_text(f"names: [x]\nval: {value}\n")
    with pytest.raises(DatasetError, match="data.yaml: not valid YAML"):
        build_dataset(yolo, "train")


@pytest.mark.parametrize("key", ["names", "train"])
def test_data_yaml_alias_bomb_is_refused_at_once(tmp_path, key):
    yolo = write_yolo(tmp_path, "train", {"a": ""}, names=["x"])
    lines = alias_bomb(key)
    (yolo / "data.yaml").write_text("\n".join([*lines, "names: [x]"] if key == "train" else lines))
    with (
        no_hang(),
        pytest.raises(DatasetError, match="data.yaml: ('names'|a split entry) must be .*, found .{,200}$"),
    ):
        build_dataset(yolo, "train")


def test_data_yaml_home_of_an_unknown_user_is_an_error_naming_it(tmp_path):
    yolo = write_yolo(tmp_path, "train", {"a": ""}, names=["x"])
    (yolo / "data.yaml").write_text(
        "train: ~no-such-user-here/images\npath: ~no-such-user-here\nnames: [x]\n"
    )
    with pytest.raises(DatasetError, match="data.yaml: split entry .* names the home of an unknown user"):
        build_dataset(yolo, "train")


def test_picture_names_with_digits_that_are_not_numbers_get_ids(tmp_path):
    assert numeric_image_ids(["a1", "a\u00b2", "b\u0663"]) == [1, 2, 3], "'²' is no number: positions"
    assert numeric_image_ids(["a1", "b\u0663"]) == [1, 3], "Arabic-Indic digits are numbers"
    yolo = write_yolo(tmp_path, "train", {"1": ""}, names=["x"])
    (yolo / "list.txt").write_text("images/train/1.jpg\nimages/train/\u00b22.jpg\n")  # listed, absent
    (yolo / "data.yaml").write_text("train: list.txt\nnames: [x]\n")
    assert len(_build(yolo)[0]) == 1
