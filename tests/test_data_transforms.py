"""Augmentations keep boxes right: inside the picture, on their object, never empty or inverted.

The object is a painted white rectangle on black (zoom-out filling black too), so after any geometric
transform the white pixels show where the object really is; its box must frame them.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd.data.transforms import (
    Compose,
    PhotometricDistort,
    RandomHorizontalFlip,
    RandomIoUCrop,
    RandomZoomOut,
    Resize,
    SanitizeBoxes,
    ZoomOutCropResize,
    build_transforms,
)
from ssd.errors import UserError
from ssd.ops.boxes import box_iou

BLACK = (0.0, 0.0, 0.0)


def _geometric(name: str):
    zoom = RandomZoomOut(fill=BLACK, p=1.0)
    return {
        "zoom_out": Compose([zoom, SanitizeBoxes()]),
        "crop": Compose([RandomIoUCrop(), SanitizeBoxes()]),
        "flip": Compose([RandomHorizontalFlip(p=1.0)]),
        "resize": Compose([Resize((120, 90))]),
        "chain": Compose([zoom, RandomIoUCrop(), RandomHorizontalFlip(), Resize(100), SanitizeBoxes()]),
        "fused": Compose(
            [ZoomOutCropResize(zoom, RandomIoUCrop(), 100), RandomHorizontalFlip(), SanitizeBoxes()]
        ),
        "ssdlite": build_transforms("ssdlite", 100),
        "ssdlite_zoom": build_transforms("ssdlite_zoom", 100),
    }[name]


GEOMETRIC = ["zoom_out", "crop", "flip", "resize", "chain", "fused", "ssdlite", "ssdlite_zoom"]


@st.composite
def painted(draw):
    height = draw(st.integers(60, 160))
    width = draw(st.integers(60, 160))
    x1 = draw(st.integers(0, width - 12))
    y1 = draw(st.integers(0, height - 12))
    x2 = draw(st.integers(x1 + 12, width))
    y2 = draw(st.integers(y1 + 12, height))
    image = torch.zeros((3, height, width), dtype=torch.uint8)
    image[:, y1:y2, x1:x2] = 255
    target = {
        "boxes": torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32),
        "labels": torch.tensor([1]),
        "iscrowd": torch.tensor([False]),
        "difficult": torch.tensor([True]),
        "image_id": 1,
        "file_name": "x.jpg",
        "orig_size": (height, width),
    }
    return image, target


def _assert_boxes_sound(image, target):
    height, width = image.shape[1:]
    boxes = target["boxes"]
    assert boxes.dtype == torch.float32 and boxes.shape[1] == 4
    assert len(target["labels"]) == len(target["iscrowd"]) == len(target["difficult"]) == len(boxes)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert ((boxes[:, 2] - boxes[:, 0]) >= 1).all() and ((boxes[:, 3] - boxes[:, 1]) >= 1).all()


def _painted_extent(image):
    """Bounding box of the pixels brighter than half: where the painted object really is."""
    bright = image[0] >= 128
    ys, xs = bright.any(dim=1).nonzero(), bright.any(dim=0).nonzero()
    if len(ys) == 0:
        return None
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


@pytest.mark.parametrize("name", GEOMETRIC)
@settings(max_examples=25, deadline=None)
@given(sample=painted(), seed=st.integers(0, 2**32))
def test_box_stays_on_its_painted_object(name, sample, seed):
    image, target = sample
    out_image, out_target = _geometric(name)(image, target, torch.Generator().manual_seed(seed))
    assert out_image.dtype == torch.uint8 and out_image.shape[0] == 3
    _assert_boxes_sound(out_image, out_target)
    assert out_target["orig_size"] == target["orig_size"] and out_target["image_id"] == 1
    if len(out_target["boxes"]) == 0:
        return  # the crop dropped the object (its centre was outside); nothing to frame
    assert out_target["difficult"].tolist() == [True], "flags travel with their box"
    extent = _painted_extent(out_image)
    assert extent is not None, "a kept box frames a visible object"
    assert torch.allclose(out_target["boxes"][0], extent, atol=1.5), (out_target["boxes"][0], extent)


@settings(max_examples=30, deadline=None)
@given(
    size=st.tuples(st.integers(20, 200), st.integers(20, 200)),
    raw=st.lists(st.tuples(*[st.floats(0, 1)] * 4), min_size=0, max_size=12),
    preset=st.sampled_from(["ssd", "ssdlite", "ssdlite_zoom", "none"]),
    seed=st.integers(0, 2**32),
)
def test_presets_never_give_an_empty_inverted_or_outside_box(size, raw, preset, seed):
    height, width = size
    boxes = []
    for a, b, c, d in raw:
        x1, x2 = sorted((a * width, c * width))
        y1, y2 = sorted((b * height, d * height))
        boxes.append([x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)])
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.arange(1, len(boxes) + 1),
        "iscrowd": torch.zeros(len(boxes), dtype=torch.bool),
        "difficult": torch.zeros(len(boxes), dtype=torch.bool),
    }
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    out_image, out_target = build_transforms(preset, 96)(image, target, torch.Generator().manual_seed(seed))
    assert out_image.shape == (3, 96, 96) and out_image.dtype == torch.uint8
    _assert_boxes_sound(out_image, out_target)
    assert set(out_target["labels"].tolist()) <= set(target["labels"].tolist())


@settings(max_examples=20, deadline=None)
@given(sample=painted(), seed=st.integers(0, 2**32))
def test_fused_zoom_crop_resize_equals_the_three_steps(sample, seed):
    image, target = sample
    zoom = RandomZoomOut(fill=BLACK)
    fused = Compose([ZoomOutCropResize(zoom, RandomIoUCrop(), 100), SanitizeBoxes()])
    steps = Compose([zoom, RandomIoUCrop(), Resize(100), SanitizeBoxes()])
    fused_image, fused_target = fused(image, target, torch.Generator().manual_seed(seed))
    step_image, step_target = steps(image, target, torch.Generator().manual_seed(seed))
    assert torch.allclose(fused_target["boxes"], step_target["boxes"], atol=1e-3)
    difference = (fused_image.float() - step_image.float()).abs()
    assert difference.mean() < 6, "only the resampling at the picture's edge may differ"


def test_ssd_preset_boxes_are_its_geometric_steps_boxes():
    """The `ssd` preset is fused geometry, flip, photometric; the distortion never moves a box, so the
    painted-object property shown for the geometry holds for the preset."""
    image = torch.randint(0, 256, (3, 120, 160), dtype=torch.uint8)
    target = {
        "boxes": torch.tensor([[10.0, 20.0, 90.0, 100.0], [100.0, 5.0, 150.0, 60.0]]),
        "labels": torch.tensor([1, 2]),
        "iscrowd": torch.zeros(2, dtype=torch.bool),
        "difficult": torch.zeros(2, dtype=torch.bool),
    }
    preset = build_transforms("ssd", 128)
    geometric = Compose(preset.transforms[:2])
    for seed in range(30):
        _, a = preset(image, target, torch.Generator().manual_seed(seed))
        _, b = geometric(image, target, torch.Generator().manual_seed(seed))
        b = SanitizeBoxes()(torch.zeros(3, 128, 128), b)[1]
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])


def test_photometric_distortion_changes_colours_only():
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    target = {"boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0]])}
    distort = PhotometricDistort(p=1.0)
    changed = 0
    for seed in range(10):
        out, out_target = distort(image, target, torch.Generator().manual_seed(seed))
        assert out.shape == image.shape and out.dtype == torch.uint8
        assert torch.equal(out_target["boxes"], target["boxes"])
        changed += int(not torch.equal(out, image))
    assert changed == 10
    same, _ = PhotometricDistort(p=0.0)(image, target)
    assert torch.equal(same, image)


def test_hue_rotation_keeps_grey_and_rotates_colours():
    distort = PhotometricDistort()
    grey = torch.tensor([100.0, 100.0, 100.0])
    assert torch.allclose(distort._hue_matrix(17.0) @ grey, grey, atol=1e-4)
    red = torch.tensor([200.0, 0.0, 0.0])
    assert torch.allclose(distort._hue_matrix(120.0) @ red, torch.tensor([0.0, 200.0, 0.0]), atol=1e-3)


def test_same_generator_seed_gives_the_same_augmentation():
    image = torch.randint(0, 256, (3, 90, 120), dtype=torch.uint8)
    target = {
        "boxes": torch.tensor([[10.0, 10.0, 80.0, 70.0]]),
        "labels": torch.tensor([1]),
        "iscrowd": torch.tensor([False]),
        "difficult": torch.tensor([False]),
    }
    preset = build_transforms("ssd", 64)
    a = preset(image, target, torch.Generator().manual_seed(3))
    b = preset(image, target, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    outputs = {
        preset(image, target, torch.Generator().manual_seed(s))[0].float().sum().item() for s in range(8)
    }
    assert len(outputs) > 4


def test_crop_keeps_the_whole_picture_when_told_and_respects_min_iou():
    boxes = torch.tensor([[10.0, 10.0, 50.0, 50.0]])
    assert RandomIoUCrop(options=(None,)).sample(boxes, 100, 100, None) is None
    generator = torch.Generator().manual_seed(0)
    found = 0
    for _ in range(20):
        sampled = RandomIoUCrop(options=(0.7,)).sample(boxes, 100, 100, generator)
        if sampled is None:
            continue  # no patch found in the trials: the whole picture is kept
        (top, left, h, w), inside = sampled
        window = torch.tensor([[left, top, left + w, top + h]], dtype=torch.float32)
        assert box_iou(boxes, window).item() >= 0.7 and inside.tolist() == [True]
        found += 1
    assert found >= 10


def test_unknown_preset_is_a_user_error():
    with pytest.raises(UserError, match="ssd, ssdlite, ssdlite_zoom, none"):
        build_transforms("fancy")
