"""What a dataset format is to the rest of the package: recognise a layout, list its splits, load a split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ssd.data.dataset import DetectionDataset, Transform


@dataclass(frozen=True)
class LoadOptions:
    """How a split is loaded; a format uses the options that concern it."""

    strict: bool = False  # any problem is an error (else bad boxes are dropped and bad pictures skipped)
    verify: str = "header"  # how carefully pictures are looked at: "exists", "header" or "decode"
    transform: Transform | None = None
    class_names: list[str] | None = None  # fixes the classes of formats that do not list them (VOC)
    image_root: Path | None = None  # where a COCO JSON's pictures are, when not next to it
    max_pixels: int | None = None  # larger pictures are refused as decompression bombs (None: the default)


@dataclass(frozen=True)
class DataFormat:
    name: str
    layout: str  # the layout in a few words, for the message when no format recognises a folder
    recognises: Callable[[Path, str], bool]  # (folder or file, split) -> whether it is this format
    splits: Callable[[Path], list[str]]  # the split names it finds; none for a layout without splits
    # (folder or file, split, options); the split "all" (`ssd.data.splits.WHOLE`) of a layout without splits
    # is every picture
    load: Callable[[Path, str, LoadOptions], DetectionDataset]
