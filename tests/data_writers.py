"""Small datasets the data tests write themselves, in each format, with the flaws a test asks for."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import torch
from PIL import Image


def write_picture(path: Path, width: int = 64, height: int = 48, colour=(120, 60, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), colour).save(path)
    return path


def write_truncated_jpeg(path: Path, width: int = 64, height: int = 48) -> Path:
    """A JPEG whose header is fine but whose data stops half-way: only decoding it finds the problem."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = torch.randint(
        0, 256, (height, width, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    Image.fromarray(noise.numpy()).save(path, quality=95)  # noise: the data is far longer than the header
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def voc_xml(file_name: str, width: int, height: int, objects: list[tuple]) -> str:
    """objects: (name, xmin, ymin, xmax, ymax[, difficult])."""
    parts = [
        f"<annotation><filename>{file_name}</filename>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
    ]
    for obj in objects:
        name, x1, y1, x2, y2 = obj[:5]
        difficult = obj[5] if len(obj) > 5 else 0
        parts.append(
            f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin>"
            f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    parts.append("</annotation>")
    return "".join(parts)


def write_voc(
    root: Path,
    pictures: dict[str, list[tuple]],
    splits: dict[str, list[str]] | None = None,
    width: int = 64,
    height: int = 48,
) -> Path:
    """A VOC folder: one 64x48 JPEG and one XML per id; `splits` default to {'train': every id}."""
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for image_id, objects in pictures.items():
        write_picture(root / "JPEGImages" / f"{image_id}.jpg", width, height)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            voc_xml(f"{image_id}.jpg", width, height, objects)
        )
    for split, ids in (splits or {"train": list(pictures)}).items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def write_coco(
    root: Path,
    split: str,
    images: list[dict],
    annotations: list[dict],
    categories: list[dict],
    write_pictures: bool = True,
) -> Path:
    """COCO layout: annotations/instances_<split>.json and <split>/<file_name> pictures."""
    for image in images:
        if write_pictures:
            write_picture(root / split / image["file_name"], image["width"], image["height"])
    json_path = root / "annotations" / f"instances_{split}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return json_path


def write_yolo(
    root: Path,
    split: str,
    labels: dict[str, str],
    names: list[str] | None = None,
    layout: str = "ultralytics",
    width: int = 100,
    height: int = 50,
) -> Path:
    """A YOLO folder, one picture per entry of `labels` (stem -> label text; None: no label file)."""
    if layout == "ultralytics":
        images, label_dir = root / "images" / split, root / "labels" / split
    else:  # roboflow
        images, label_dir = root / split / "images", root / split / "labels"
    label_dir.mkdir(parents=True, exist_ok=True)
    for stem, text in labels.items():
        write_picture(images / f"{stem}.jpg", width, height)
        if text is not None:
            (label_dir / f"{stem}.txt").write_text(text)
    if names is not None:
        (root / "data.yaml").write_text(json.dumps({"names": names, "nc": len(names)}))
    return root


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_bomb(path, width: int, height: int, complete: bool = False):
    """A 1-bit black PNG of width x height. Unless `complete`, only its first rows are stored: enough for a
    header that claims the full size, which is all a reader that refuses it from the header may look at."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the packed bits
    data = zlib.compress(row * (height if complete else 4), 9)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")
    )
    return path
