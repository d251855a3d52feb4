"""`ssd data check`: what a dataset holds and every problem in it, as tables a person reads at a glance.

Every picture is decoded (a truncated JPEG shows up only then), every box checked, and the problems listed
in full, not just counted: this is where a user learns what training would silently drop.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field

import torch

from ssd.data.build import build_dataset, detect_format
from ssd.data.dataset import DetectionDataset

# COCO's size buckets (box area in pixels): small < 32^2 <= medium < 96^2 <= large.
_SMALL, _LARGE = 32**2, 96**2


@dataclass
class SplitReport:
    name: str
    dataset: DetectionDataset
    problems: list = field(default_factory=list)


def check_split(path: str, split: str, **load_options) -> SplitReport:
    """Build the split with every picture decoded and every problem collected (not raised);
    `load_options` go to `build_dataset` (image_root, max_pixels)."""
    fmt, _ = detect_format(path, split)
    if fmt == "synthetic":
        load_options = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the report lists the problems itself
        dataset = build_dataset(
            path, split, verify="exists" if fmt == "synthetic" else "decode", **load_options
        )
    return SplitReport(split, dataset, list(dataset.problems.problems))


def _table(header: list[str], rows: list[list], indent: str = "  ") -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [all(_is_number(row[i]) for row in cells[1:]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)]
        return indent + "  ".join(parts).rstrip()

    rule = indent + "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _is_number(text: str) -> bool:
    try:
        float(text.replace("x", "").replace("%", "") or "x")
        return True
    except ValueError:
        return False


def _stats(values: torch.Tensor) -> list[str]:
    if values.numel() == 0:
        return ["-", "-", "-", "-"]
    v = values.float()
    return [f"{v.min():.0f}", f"{v.median():.0f}", f"{v.mean():.1f}", f"{v.max():.0f}"]


def format_report(report: SplitReport) -> str:
    dataset = report.dataset
    records = dataset.records
    lines = [f"split '{report.name}': {dataset.source}"]
    boxes = torch.cat([r.boxes for r in records]) if records else torch.zeros((0, 4))
    labels = torch.cat([r.labels for r in records]) if records else torch.zeros((0,), dtype=torch.int64)
    crowd = torch.cat([r.iscrowd for r in records]) if records else torch.zeros((0,), dtype=torch.bool)
    difficult = torch.cat([r.difficult for r in records]) if records else torch.zeros((0,), dtype=torch.bool)
    per_picture = torch.tensor([len(r.boxes) for r in records], dtype=torch.float32)
    lines.append(
        f"  {len(records)} pictures, {len(boxes)} boxes, {len(dataset.class_names)} classes "
        f"(num_classes = {dataset.num_classes} with background), {int(crowd.sum())} crowd, "
        f"{int(difficult.sum())} difficult"
    )

    rows = []
    for label, name in enumerate(dataset.class_names, start=1):
        mine = labels == label
        pictures = sum(1 for r in records if (r.labels == label).any())
        category = dataset.label_to_category_id[label]
        rows.append(
            [
                label,
                category,
                name,
                int(mine.sum()),
                pictures,
                int((mine & crowd).sum()),
                int((mine & difficult).sum()),
            ]
        )
    lines += [
        "",
        "boxes per class:",
        _table(["label", "id", "class", "boxes", "pictures", "crowd", "difficult"], rows),
    ]

    sizes = Counter((r.width, r.height) for r in records)
    common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common(3))
    widths = torch.tensor([r.width for r in records], dtype=torch.float32)
    heights = torch.tensor([r.height for r in records], dtype=torch.float32)
    box_w, box_h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    area = box_w * box_h
    distinct = f"{len(sizes)} distinct picture size{'s' if len(sizes) != 1 else ''}"
    lines += ["", f"sizes ({distinct}; most common: {common or '-'}):"]
    lines.append(
        _table(
            ["", "min", "median", "mean", "max"],
            [
                ["picture width", *_stats(widths)],
                ["picture height", *_stats(heights)],
                ["box width", *_stats(box_w)],
                ["box height", *_stats(box_h)],
                ["boxes per picture", *_stats(per_picture)],
            ],
        )
    )
    small, large = int((area < _SMALL).sum()), int((area >= _LARGE).sum())
    lines.append(
        f"  boxes small (< 32x32) {small}, medium {len(boxes) - small - large}, large (>= 96x96) {large}; "
        f"pictures with no box: {int((per_picture == 0).sum())}"
    )

    lines += [
        "",
        f"problems: {len(report.problems)}" + (f" ({dataset.problems.summary()})" if report.problems else ""),
    ]
    lines += [f"  {problem}" for problem in report.problems]
    return "\n".join(lines)
