"""Default-box scales fitted to a dataset's boxes (`--anchor-scales auto`).

The architectures' scales (e.g. 0.2..0.95 of the picture) suit COCO. A dataset with objects smaller than the
smallest default box gives them almost no positives. The fit lowers the first (finest) feature map's scale
to the dataset's small objects (2nd percentile of the box sizes, halved for zoom-out, never under two cells
of that map) and keeps the architecture's scales for every other map. Each map's second square box has
size sqrt(s_k * s_(k+1)), so the first map then also covers the sizes between the small objects and the
architecture's second scale, on the finest grid, where a default box sits close to any object.

Measured on BCCD (mobilenetv3_ssd from scratch, 20 epochs, test mAP / mAP@0.5): the architecture's scales
0.437 / 0.636 (platelets, the small class, AP 0.027); scales spread linearly over the boxes' sizes
(0.10..0.53, which puts medium objects on coarse maps) 0.413 / 0.772; this fit (0.10, then 0.35..0.95)
0.495 / 0.805. See docs/training.md.
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
    targets: Sequence[dict],
    architecture_scales: Sequence[float],
    zoom_out: bool = False,
    first_map_cells: int | None = None,
) -> tuple[float, ...]:
    """The architecture's scales (`num_maps + 1`, the last being the largest map's s_(m+1)) with the first
    lowered to the training boxes' small sizes, when they are smaller than it.

    With `first_map_cells` (the first feature map's side), the first scale is at least two cells: a default
    box much smaller than the spacing of the boxes' centres overlaps an object by IoU 0.5 only where the
    object happens to sit on a centre, and such objects get almost no positives (measured on the synthetic
    shapes at 160 pixels: a first scale of 0.064 gave mAP@0.5 0.02 after 3 epochs, 0.2 gave 0.44)."""
    sizes = box_relative_sizes(targets)
    if len(sizes) == 0:
        raise UserError("cannot fit default-box scales: the training split has no boxes")
    low = float(torch.quantile(sizes, 0.02))
    if zoom_out:
        low /= 2  # zoom-out shrinks pictures by up to 4x (by 2.5x on average when it applies)
    low = max(low, 0.04, 2.0 / first_map_cells if first_map_cells else 0.0)
    scales = tuple(float(s) for s in architecture_scales)
    return (round(min(low, scales[0]), 4),) + scales[1:]


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
