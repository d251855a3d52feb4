"""Default boxes: a fixed set of boxes of several scales and aspect ratios on every feature-map cell.

For feature map k (of m) with scale s_k and aspect ratios a, each cell carries:
  - a square box of side s_k,
  - a square box of side sqrt(s_k * s_{k+1}),
  - for each a: a box s_k*sqrt(a) wide and s_k/sqrt(a) high, and its transpose.
So a map with aspect ratios (2,) has 4 boxes per cell and (2, 3) has 6. Scales are fractions of the input
picture; early, high-resolution maps get the small scales. The order is map by map, cells row-major, boxes
within a cell, the same order the heads produce their outputs in.

Box centres sit at (j + 0.5) * step. The step is the input size over the map size unless a config gives
explicit steps (the SSD300 recipe uses 8, 16, 32, 64, 100, 300 where 300/38 would give 7.9).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ssd.ops.boxes import cxcywh_to_xyxy


def boxes_per_location(aspect_ratios: Sequence[Sequence[float]]) -> list[int]:
    return [2 + 2 * len(ratios) for ratios in aspect_ratios]


def linear_scales(min_scale: float, max_scale: float, num_maps: int) -> tuple[float, ...]:
    """The SSD paper's scales: evenly spaced from min to max over the maps, then 1.0 for the last s_{k+1}."""
    if num_maps == 1:
        return (min_scale, 1.0)
    step = (max_scale - min_scale) / (num_maps - 1)
    return tuple(min_scale + step * k for k in range(num_maps)) + (1.0,)


def default_boxes_cxcywh(
    feature_sizes: Sequence[tuple[int, int]],
    input_size: tuple[int, int],
    scales: Sequence[float],
    aspect_ratios: Sequence[Sequence[float]],
    steps: Sequence[float] | None = None,
    clip: bool = False,
) -> Tensor:
    """Default boxes as `(A, 4)` (cx, cy, w, h), normalised to the input picture ([0, 1])."""
    if len(scales) != len(feature_sizes) + 1:
        raise ValueError(
            f"need {len(feature_sizes) + 1} scales for {len(feature_sizes)} maps, got {len(scales)}"
        )
    if len(aspect_ratios) != len(feature_sizes):
        raise ValueError(f"need aspect ratios for {len(feature_sizes)} maps, got {len(aspect_ratios)}")
    input_h, input_w = input_size
    all_boxes = []
    for k, (map_h, map_w) in enumerate(feature_sizes):
        sizes = _box_sizes(scales[k], scales[k + 1], aspect_ratios[k])
        if clip:
            sizes = sizes.clamp(0, 1)
        if steps is not None:
            centre_x = (torch.arange(map_w, dtype=torch.float64) + 0.5) * steps[k] / input_w
            centre_y = (torch.arange(map_h, dtype=torch.float64) + 0.5) * steps[k] / input_h
        else:
            centre_x = (torch.arange(map_w, dtype=torch.float64) + 0.5) / map_w
            centre_y = (torch.arange(map_h, dtype=torch.float64) + 0.5) / map_h
        grid_y, grid_x = torch.meshgrid(centre_y, centre_x, indexing="ij")
        centres = torch.stack((grid_x, grid_y), dim=-1).reshape(-1, 1, 2).expand(-1, len(sizes), 2)
        box_sizes = sizes[None].expand(len(centres), -1, 2)
        all_boxes.append(torch.cat((centres, box_sizes), dim=-1).reshape(-1, 4))
    return torch.cat(all_boxes).float()


def _box_sizes(scale: float, next_scale: float, ratios: Sequence[float]) -> Tensor:
    sizes = [(scale, scale)]
    between = math.sqrt(scale * next_scale)
    sizes.append((between, between))
    for ratio in ratios:
        root = math.sqrt(ratio)
        sizes.append((scale * root, scale / root))
        sizes.append((scale / root, scale * root))
    return torch.tensor(sizes, dtype=torch.float64)


def default_boxes_xyxy(
    feature_sizes: Sequence[tuple[int, int]],
    input_size: tuple[int, int],
    scales: Sequence[float],
    aspect_ratios: Sequence[Sequence[float]],
    steps: Sequence[float] | None = None,
    clip: bool = False,
) -> Tensor:
    """Default boxes as `(A, 4)` xyxy in pixels of the input picture (may reach outside it)."""
    normalized = default_boxes_cxcywh(feature_sizes, input_size, scales, aspect_ratios, steps, clip)
    input_h, input_w = input_size
    scale = torch.tensor([input_w, input_h, input_w, input_h], dtype=torch.float32)
    return cxcywh_to_xyxy(normalized * scale)
