import math

import pytest
import torch

import ssd
from ssd.ops.anchors import boxes_per_location, default_boxes_cxcywh, linear_scales
from ssd.ops.boxes import (
    BoxCoder,
    box_iou,
    clip_boxes,
    cxcywh_to_xyxy,
    denormalize_boxes,
    generalized_box_iou,
    normalize_boxes,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)


def test_format_conversions_round_trip():
    boxes = torch.tensor([[10.0, 20, 50, 80], [0, 0, 1, 1]])
    assert torch.equal(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes)
    assert torch.equal(xywh_to_xyxy(xyxy_to_xywh(boxes)), boxes)
    assert xyxy_to_cxcywh(boxes)[0].tolist() == [30, 50, 40, 60]
    assert torch.allclose(denormalize_boxes(normalize_boxes(boxes, 100, 200), 100, 200), boxes)
    assert normalize_boxes(boxes, 100, 200)[0].tolist() == pytest.approx([0.05, 0.2, 0.25, 0.8])


def test_iou_and_giou_known_values():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10], [3, 3, 3, 8]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([50 / 150, 0.0, 1.0, 0.0])
    # Disjoint boxes: GIoU = 0 - (enclosing 900 - union 200) / 900.
    assert generalized_box_iou(a, b)[0, 1].item() == pytest.approx(-700 / 900)


def test_clip_boxes():
    clipped = clip_boxes(torch.tensor([[-5.0, -1, 120, 50]]), height=40, width=100)
    assert clipped.tolist() == [[0, 0, 100, 40]]


def test_box_coder_round_trip_and_variances():
    coder = BoxCoder()
    anchors = torch.tensor([[0.0, 0, 20, 20], [100, 100, 164, 132]])
    boxes = torch.tensor([[2.0, 3, 18, 25], [90, 110, 170, 128]])
    offsets = coder.encode(boxes, anchors)
    assert torch.allclose(coder.decode(offsets, anchors), boxes, atol=1e-4)
    # A box shifted by one anchor width gives offset 1 / 0.1 = 10; twice as wide gives log(2) / 0.2.
    shifted = coder.encode(torch.tensor([[20.0, 0, 60, 20]]), torch.tensor([[0.0, 0, 20, 20]]))
    assert shifted[0].tolist() == pytest.approx([15.0, 0.0, math.log(2) / 0.2, 0.0])


def test_box_coder_decode_never_overflows():
    decoded = BoxCoder().decode(torch.tensor([[0.0, 0, 1e4, 1e4]]), torch.tensor([[0.0, 0, 10, 10]]))
    assert torch.isfinite(decoded).all()


def test_linear_scales_and_boxes_per_location():
    assert linear_scales(0.2, 0.95, 6) == pytest.approx((0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0))
    assert boxes_per_location([(2,), (2, 3)]) == [4, 6]


def test_default_boxes_layout_small_first_and_row_major():
    boxes = default_boxes_cxcywh([(2, 2), (1, 1)], (100, 100), (0.2, 0.5, 0.9), [(2,), (2,)])
    assert boxes.shape == (2 * 2 * 4 + 4, 4)
    # First cell's first box: centre of cell (0, 0), side s_0; then sqrt(s0*s1); then the ratio-2 pair.
    assert boxes[0].tolist() == pytest.approx([0.25, 0.25, 0.2, 0.2])
    assert boxes[1, 2].item() == pytest.approx(math.sqrt(0.2 * 0.5))
    assert boxes[2, 2:].tolist() == pytest.approx([0.2 * math.sqrt(2), 0.2 / math.sqrt(2)])
    assert boxes[3, 2:].tolist() == pytest.approx([0.2 / math.sqrt(2), 0.2 * math.sqrt(2)])
    # Second cell moves along x (row-major).
    assert boxes[4, :2].tolist() == pytest.approx([0.75, 0.25])
    # The last map's boxes are the largest.
    assert boxes[16:, 2].min() > boxes[:16, 2].max() * 0.9


@pytest.mark.parametrize(
    "arch, count",
    [("vgg16_ssd300", 8732), ("vgg16_ssd512", 24564), ("mobilenetv3_ssd", 3234), ("resnet50_ssd300", 8732)],
)
def test_default_box_counts_of_standard_architectures(arch, count):
    assert ssd.build_model(arch, num_classes=3).num_default_boxes == count
