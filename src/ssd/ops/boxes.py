"""Box arithmetic shared by the anchors, the loss, the post-processor and evaluation.

Boxes are `(..., 4)` tensors. `xyxy` is (x1, y1, x2, y2); `cxcywh` is (centre x, centre y, width, height).
Pixel boxes use the convention of torchvision and pycocotools: a box's width is `x2 - x1` (no +1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# SSD's box-coding variances: 0.1 for the centre offsets, 0.2 for the log sizes, i.e. weights (10, 10, 5, 5).
SSD_VARIANCES = (0.1, 0.2)

# exp() of a predicted log-size beyond this would overflow; torchvision clamps at the same value.
_MAX_LOG_SIZE = math.log(1000.0 / 16)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """COCO's (x, y, width, height) to xyxy."""
    x, y, w, h = boxes.unbind(-1)
    return torch.stack((x, y, x + w, y + h), dim=-1)


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def _intersection_and_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    # Work on contiguous coordinate planes of shape (..., N, 1) and (..., 1, M): broadcasting whole
    # (..., 4) rows, or strided slices of them, is several times slower for the large matrices of NMS. The
    # pair matrices are computed in place, in three buffers instead of a dozen temporaries: allocating a large
    # one costs more than filling it (1125 boxes: 9 ms against 22 ms on one core). In-place arithmetic
    # carries no gradient; the localisation loss uses `elementwise_generalized_box_iou`.
    ax1, ay1, ax2, ay2 = (c.unsqueeze(-1) for c in boxes1.movedim(-1, 0).contiguous())
    bx1, by1, bx2, by2 = (c.unsqueeze(-2) for c in boxes2.movedim(-1, 0).contiguous())
    width = torch.minimum(ax2, bx2)
    scratch = torch.maximum(ax1, bx1)
    width.sub_(scratch).clamp_(min=0)
    height = torch.minimum(ay2, by2)
    torch.maximum(ay1, by1, out=scratch)
    height.sub_(scratch).clamp_(min=0)
    intersection = width.mul_(height)
    area1 = (ax2 - ax1).clamp(min=0) * (ay2 - ay1).clamp(min=0)
    area2 = (bx2 - bx1).clamp(min=0) * (by2 - by1).clamp(min=0)
    union = torch.add(area1, area2, out=scratch).sub_(intersection)
    return intersection, union


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of every pair: `(..., N, 4)` x `(..., M, 4)` -> `(..., N, M)`. Degenerate boxes give IoU 0."""
    intersection, union = _intersection_and_union(boxes1, boxes2)
    return intersection.div_(union.clamp_(min=torch.finfo(union.dtype).tiny))


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU of every pair, in [-1, 1]: IoU minus the share of the enclosing box that neither box covers."""
    intersection, union = _intersection_and_union(boxes1, boxes2)
    eps = torch.finfo(union.dtype).eps
    iou = intersection / union.clamp(min=eps)
    ax1, ay1, ax2, ay2 = (c.unsqueeze(-1) for c in boxes1.unbind(-1))
    bx1, by1, bx2, by2 = (c.unsqueeze(-2) for c in boxes2.unbind(-1))
    enclosing = (torch.maximum(ax2, bx2) - torch.minimum(ax1, bx1)).clamp(min=0) * (
        torch.maximum(ay2, by2) - torch.minimum(ay1, by1)
    ).clamp(min=0)
    return iou - (enclosing - union) / enclosing.clamp(min=eps)


def elementwise_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU of matching rows: `(..., 4)` and `(..., 4)` -> `(...)`; used by the GIoU localisation loss."""
    eps = torch.finfo(boxes1.dtype).eps
    top_left = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    intersection = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1) + box_area(boxes2) - intersection
    iou = intersection / union.clamp(min=eps)
    enclosing_wh = torch.maximum(boxes1[..., 2:], boxes2[..., 2:]) - torch.minimum(
        boxes1[..., :2], boxes2[..., :2]
    )
    enclosing = enclosing_wh[..., 0] * enclosing_wh[..., 1]
    return iou - (enclosing - union) / enclosing.clamp(min=eps)


def clip_boxes(boxes: Tensor, height: float, width: float) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(
        (x1.clamp(0, width), y1.clamp(0, height), x2.clamp(0, width), y2.clamp(0, height)), dim=-1
    )


def normalize_boxes(boxes: Tensor, height: float, width: float) -> Tensor:
    """Pixel xyxy to [0, 1] xyxy relative to a picture of the given size."""
    scale = boxes.new_tensor([width, height, width, height])
    return boxes / scale


def denormalize_boxes(boxes: Tensor, height: float, width: float) -> Tensor:
    scale = boxes.new_tensor([width, height, width, height])
    return boxes * scale


class BoxCoder:
    """SSD's box encoding: offsets of a box from its default box, scaled by the variances.

    `encode(boxes, anchors)` and `decode(offsets, anchors)` take xyxy boxes (pixels or normalised: the same
    units for both) and are exact inverses of each other. With variances (0.1, 0.2) this is torchvision's
    `BoxCoder(weights=(10, 10, 5, 5))`, so torchvision's trained heads decode correctly.
    """

    def __init__(self, variances: tuple[float, float] = SSD_VARIANCES):
        self.center_variance, self.size_variance = variances

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        anchor_cxcywh = xyxy_to_cxcywh(anchors)
        box_cxcywh = xyxy_to_cxcywh(boxes)
        center = (
            (box_cxcywh[..., :2] - anchor_cxcywh[..., :2]) / anchor_cxcywh[..., 2:] / self.center_variance
        )
        # A degenerate target must not produce log(0); the loss never sees one, but stay finite regardless.
        size_ratio = (box_cxcywh[..., 2:] / anchor_cxcywh[..., 2:]).clamp(min=1e-6)
        size = torch.log(size_ratio) / self.size_variance
        return torch.cat((center, size), dim=-1)

    def decode(self, offsets: Tensor, anchors: Tensor) -> Tensor:
        anchor_cxcywh = xyxy_to_cxcywh(anchors)
        center = offsets[..., :2] * self.center_variance * anchor_cxcywh[..., 2:] + anchor_cxcywh[..., :2]
        log_size = (offsets[..., 2:] * self.size_variance).clamp(max=_MAX_LOG_SIZE)
        size = torch.exp(log_size) * anchor_cxcywh[..., 2:]
        return torch.cat((center - size / 2, center + size / 2), dim=-1)
