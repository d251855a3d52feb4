"""Default-box scales fitted to a dataset's boxes (`--anchor-scales auto`).

The architectures' scales (e.g. 0.2..0.95 of the picture) suit COCO; a dataset whose objects are all
small, or all of one size, wastes most default boxes on sizes it never shows, and its objects match few
default boxes. Here the scales run linearly, as in the SSD paper, but from the 2nd to the 99th percentile of
the training boxes' sizes (side of the square of equal area, as a share of the picture), widened for the
augmentation that shrinks pictures (zoom-out).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ssd.errors import UserError


def box_relative_sizes(targets: Sequence[dict]) -> torch.Tensor:
    """sqrt(box area / picture area) of every non-crowd box."""
    sizes = []
    for target in targets:
        boxes = target["boxes"].reshape(-1, 4).float()
        if "iscrowd" in target and len(target["iscrowd"]):
            boxes = boxes[~target["iscrowd"].bool()]
        height, width = target["orig_size"]
        area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
        sizes.append((area / float(height * width)).sqrt())
    return torch.cat(sizes) if sizes else torch.zeros(0)


def fit_scales(
    targets: Sequence[dict], num_maps: int, zoom_out: bool = False, first_map_cells: int | None = None
) -> tuple[float, ...]:
    """`num_maps + 1` scales (the last is the extra s_{m+1} of the largest map's second square box).

    With `first_map_cells` (the first feature map's side), the smallest scale is at least two cells: a
    default box much smaller than the spacing of the boxes' centres overlaps an object by IoU 0.5 only where
    the object happens to sit on a centre, and such objects get almost no positives (measured on the
    synthetic shapes at 160 pixels: scales from 0.064 gave mAP@0.5 0.02 after 3 epochs, the default
    0.2..0.95 gave 0.44)."""
    sizes = box_relative_sizes(targets)
    if len(sizes) == 0:
        raise UserError("cannot fit default-box scales: the training split has no boxes")
    low = float(torch.quantile(sizes, 0.02))
    high = float(torch.quantile(sizes, 0.99))
    if zoom_out:
        low /= 2  # zoom-out shrinks pictures by up to 4x (by 2.5x on average when it applies)
    low = min(max(low, 0.04, 2.0 / first_map_cells if first_map_cells else 0.0), 0.5)
    high = min(max(high * 1.1, low * 2), 0.95)
    if num_maps == 1:
        return (low, high)
    step = (high - low) / (num_maps - 1)
    scales = [low + step * k for k in range(num_maps)]
    return tuple(round(s, 4) for s in scales) + (round(min(1.0, high + step), 4),)


def parse_scales(text: str, num_maps: int) -> tuple[float, ...]:
    try:
        scales = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(
            f"--anchor-scales {text!r}: give 'default', 'auto' or comma-separated numbers"
        ) from None
    if len(scales) != num_maps + 1:
        raise UserError(
            f"--anchor-scales: this architecture has {num_maps} feature maps, so it needs {num_maps + 1} "
            f"scales (one per map plus the last map's s_(m+1)), got {len(scales)}"
        )
    if any(not 0 < s <= 1.5 for s in scales) or list(scales) != sorted(scales):
        raise UserError(f"--anchor-scales {text!r}: scales must grow and lie in (0, 1.5]")
    return scales
