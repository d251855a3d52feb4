"""What a dataset writer is to the rest of the package: it writes loaded splits out in its own layout.

A writer is given every split at once (some layouts are shared by all of them: YOLO's `data.yaml`, VOC's
ids, which must be unique across splits) and the splits all carry the same classes, so a writer never has
to reconcile them (`ssd.data.convert` does that first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ssd.data.dataset import DetectionDataset


@dataclass
class SplitWritten:
    """What a writer wrote for one split, and what the format could not hold."""

    split: str  # the split's name in the written dataset
    pictures: int = 0
    boxes: int = 0
    notes: list[str] = field(default_factory=list)  # one phrase each: what was left out or changed

    def line(self) -> str:
        text = f"{self.split}: {self.pictures} pictures, {self.boxes} boxes written"
        return "; ".join([text, *self.notes])


@dataclass(frozen=True)
class Writer:
    name: str
    layout: str  # the layout in a few words, for help texts
    # (an empty folder to write into, split name -> dataset) -> one report per split, in the same order
    write: Callable[[Path, dict[str, DetectionDataset]], list[SplitWritten]]
