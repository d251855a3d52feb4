"""Augmentations that keep boxes right, on uint8 (3, H, W) tensors and the package's target dicts.

Every transform is `transform(image, target, generator=None) -> (image, target)` and draws its randomness from
`generator` (the global torch RNG when None), so a loader can give each sample its own seeded generator and
reproduce an epoch exactly, whatever the number of workers. Geometric transforms move, clip and drop boxes
together with `labels`, `iscrowd` and `difficult`; `orig_size` keeps the stored picture's size.

Presets (`build_transforms`):
- `ssd`: the SSD paper's pipeline: zoom-out (expand) up to 4x, IoU-constrained random crop, horizontal flip,
  resize, photometric distortion. Zoom-out, crop and resize are done in one step (`ZoomOutCropResize`) that
  draws exactly what the three separate transforms draw but never builds the up-to-16x larger canvas. The
  photometric distortion (per pixel, so its place in the chain changes nothing but the colour of zoom-out's
  fill) runs last, on the small output, where it costs a fraction of what it costs on the stored picture.
- `ssdlite`: IoU-constrained crop, flip and resize: torchvision's SSDLite recipe.
  Flipping after the resize is the same geometry and costs less.
- `none`: resize only (evaluation, or training without augmentation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ssd.errors import UserError, did_you_mean
from ssd.ops.boxes import box_iou

Target = dict
PRESETS = ("ssd", "ssdlite", "ssdlite_zoom", "none")
# ssdlite_zoom's zoom-out: at most 1.5x, half the time. Objects keep roughly their size (BCCD's cells are
# always seen at one magnification), but the IoU crop, which mostly enlarges them, no longer decides alone.
LITE_ZOOM_OUT = 1.5

# The fill of zoom-out's canvas: the ImageNet mean in 0..255, as in SSD.
MEAN_FILL = (123.0, 117.0, 104.0)

# Boxes narrower or lower than this many pixels after a geometric step carry no object and are dropped.
MIN_BOX_SIZE = 1.0

# Kept aligned with the boxes; `area` is the annotation's (for COCO evaluation) and is not rescaled.
_PER_BOX_KEYS = ("boxes", "labels", "iscrowd", "difficult", "area")


def _rand(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * _rand(generator)


def _choice(options: tuple | list, generator: torch.Generator | None):
    return options[int(torch.randint(len(options), (), generator=generator))]


def keep_boxes(target: Target, keep: Tensor, boxes: Tensor | None = None) -> Target:
    """A copy of `target` with only the boxes where `keep` is true (and `boxes` as their new coordinates)."""
    target = dict(target)
    new_boxes = target["boxes"] if boxes is None else boxes
    for key in _PER_BOX_KEYS:
        if key in target:
            target[key] = (new_boxes if key == "boxes" else target[key])[keep]
    return target


def clip_and_drop(target: Target, height: int, width: int, min_size: float = MIN_BOX_SIZE) -> Target:
    """Clip boxes to the picture and drop those left narrower or lower than `min_size` pixels."""
    boxes = target["boxes"].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    return keep_boxes(target, keep, boxes)


def resize_image(image: Tensor, height: int, width: int) -> Tensor:
    """Bilinear resize of a uint8 (3, H, W) picture, antialiased when shrinking, as torchvision does."""
    if tuple(image.shape[1:]) == (height, width):
        return image
    return F.interpolate(
        image[None], size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )[0]


def _scale_boxes(boxes: Tensor, scale: Tensor, height: int, width: int) -> Tensor:
    """Boxes times (sx, sy, sx, sy), kept inside the new picture (float rounding can overshoot by an ulp)."""
    scaled = boxes * scale
    scaled[:, 0::2] = scaled[:, 0::2].clamp(0, width)
    scaled[:, 1::2] = scaled[:, 1::2].clamp(0, height)
    return scaled


class Compose:
    def __init__(self, transforms: list):
        self.transforms = list(transforms)

    def __call__(self, image: Tensor, target: Target, generator: torch.Generator | None = None):
        for transform in self.transforms:
            image, target = transform(image, target, generator)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


class PhotometricDistort:
    """SSD's photometric distortion: brightness, contrast (before or after the colour steps), saturation,
    hue and a channel swap, each applied with probability `p`.

    Each step is an affine map of the RGB vector (contrast scales, brightness adds, saturation blends with the
    luminance, hue rotates about the grey axis, the swap permutes), so the steps are composed into one 3x3
    matrix and one offset and the picture is touched once. Values are clamped to 0..255 at the end.
    """

    _LUMA = torch.tensor([0.299, 0.587, 0.114])
    _PERMUTATIONS = ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))

    def __init__(
        self,
        brightness: float = 32.0,
        contrast: tuple[float, float] = (0.5, 1.5),
        saturation: tuple[float, float] = (0.5, 1.5),
        hue_degrees: float = 18.0,
        p: float = 0.5,
    ):
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.hue_degrees, self.p = hue_degrees, p

    def __repr__(self) -> str:
        return f"PhotometricDistort(p={self.p})"

    def _hue_matrix(self, degrees: float) -> Tensor:
        # Rotation about the (1, 1, 1) grey axis by `degrees`: a hue shift that keeps luminance roughly.
        angle = math.radians(degrees)
        cos, sin = math.cos(angle), math.sin(angle)
        k = 1.0 / 3.0
        s = math.sqrt(k)
        return torch.tensor(
            [
                [cos + (1 - cos) * k, (1 - cos) * k - s * sin, (1 - cos) * k + s * sin],
                [(1 - cos) * k + s * sin, cos + (1 - cos) * k, (1 - cos) * k - s * sin],
                [(1 - cos) * k - s * sin, (1 - cos) * k + s * sin, cos + (1 - cos) * k],
            ]
        )

    def sample(self, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """The affine map (matrix, offset) of one draw of the distortion."""
        matrix, offset = torch.eye(3), torch.zeros(3)

        def then(step_matrix: Tensor, step_offset: Tensor | None = None) -> None:
            nonlocal matrix, offset
            matrix, offset = step_matrix @ matrix, step_matrix @ offset
            if step_offset is not None:
                offset = offset + step_offset

        if _rand(generator) < self.p:
            then(torch.eye(3), torch.full((3,), _uniform(-self.brightness, self.brightness, generator)))
        contrast_first = _rand(generator) < 0.5
        contrast = _uniform(*self.contrast, generator) if _rand(generator) < self.p else 1.0
        if contrast_first:
            then(torch.eye(3) * contrast)
        if _rand(generator) < self.p:
            factor = _uniform(*self.saturation, generator)
            then(factor * torch.eye(3) + (1 - factor) * torch.ones(3, 1) * self._LUMA[None])
        if _rand(generator) < self.p:
            then(self._hue_matrix(_uniform(-self.hue_degrees, self.hue_degrees, generator)))
        if not contrast_first:
            then(torch.eye(3) * contrast)
        if _rand(generator) < self.p:
            then(torch.eye(3)[list(_choice(self._PERMUTATIONS, generator))])
        return matrix, offset

    def __call__(self, image: Tensor, target: Target, generator: torch.Generator | None = None):
        matrix, offset = self.sample(generator)
        if torch.equal(matrix, torch.eye(3)) and not offset.any():
            return image, target
        channels, height, width = image.shape
        # +0.5 then truncation by the uint8 cast rounds to nearest, one pass fewer than round().
        pixels = torch.addmm((offset + 0.5)[:, None], matrix, image.reshape(channels, -1).float())
        return pixels.clamp_(0, 255).to(torch.uint8).reshape(channels, height, width), target


class RandomZoomOut:
    """SSD's expand: put the picture on a canvas up to `max_ratio` times larger filled with the mean colour,
    so objects get smaller (the paper's answer to small objects)."""

    def __init__(self, max_ratio: float = 4.0, fill: tuple[float, float, float] = MEAN_FILL, p: float = 0.5):
        self.max_ratio, self.fill, self.p = max_ratio, fill, p

    def __repr__(self) -> str:
        return f"RandomZoomOut(max_ratio={self.max_ratio}, p={self.p})"

    def sample(self, height: int, width: int, generator: torch.Generator | None):
        """(canvas height, canvas width, top, left) of the picture on its canvas; None for no zoom-out."""
        if _rand(generator) >= self.p:
            return None
        ratio = _uniform(1.0, self.max_ratio, generator)
        canvas_h, canvas_w = int(height * ratio), int(width * ratio)
        top = int(_rand(generator) * (canvas_h - height))
        left = int(_rand(generator) * (canvas_w - width))
        return canvas_h, canvas_w, top, left

    def fill_tensor(self) -> Tensor:
        return torch.tensor(self.fill).round().to(torch.uint8)[:, None, None]

    def __call__(self, image: Tensor, target: Target, generator: torch.Generator | None = None):
        _, height, width = image.shape
        params = self.sample(height, width, generator)
        if params is None:
            return image, target
        canvas_h, canvas_w, top, left = params
        canvas = self.fill_tensor().expand(3, canvas_h, canvas_w).clone()
        canvas[:, top : top + height, left : left + width] = image
        target = dict(
            target, boxes=target["boxes"] + torch.tensor([left, top, left, top], dtype=torch.float32)
        )
        return canvas, target


class RandomIoUCrop:
    """SSD's random crop: pick a minimum IoU from `options` (None keeps the whole picture, 0.0 any patch),
    then try patches of `min_scale`..1 of each side with aspect ratio in `aspect_range` until one overlaps
    some box by at least that IoU. Boxes whose centre falls outside the patch are dropped, others clipped."""

    def __init__(
        self,
        options: tuple = (None, 0.0, 0.1, 0.3, 0.5, 0.7, 0.9),
        min_scale: float = 0.3,
        aspect_range: tuple[float, float] = (0.5, 2.0),
        trials: int = 40,
        attempts: int = 10,
    ):
        self.options, self.min_scale, self.aspect_range = options, min_scale, aspect_range
        self.trials, self.attempts = trials, attempts

    def __repr__(self) -> str:
        return f"RandomIoUCrop(options={self.options})"

    def sample(self, boxes: Tensor, height: int, width: int, generator: torch.Generator | None):
        """(top, left, crop height, crop width) and the mask of boxes kept; None keeps the whole picture."""
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        for _ in range(self.attempts):
            min_iou = _choice(self.options, generator)
            if min_iou is None:
                return None
            # All trials at once: one draw of (width scale, height scale, left, top) per trial.
            draws = torch.rand((self.trials, 4), generator=generator)
            scale = self.min_scale + (1.0 - self.min_scale) * draws[:, :2]
            crop_w = (width * scale[:, 0]).floor()
            crop_h = (height * scale[:, 1]).floor()
            left = (draws[:, 2] * (width - crop_w)).floor()
            top = (draws[:, 3] * (height - crop_h)).floor()
            aspect = crop_w / crop_h.clamp(min=1)
            valid = (
                (crop_w >= 1)
                & (crop_h >= 1)
                & (aspect >= self.aspect_range[0])
                & (aspect <= self.aspect_range[1])
            )
            windows = torch.stack((left, top, left + crop_w, top + crop_h), dim=1)
            inside = (
                (centres[None, :, 0] > windows[:, None, 0])
                & (centres[None, :, 0] < windows[:, None, 2])
                & (centres[None, :, 1] > windows[:, None, 1])
                & (centres[None, :, 1] < windows[:, None, 3])
            )
            if len(boxes):
                overlaps = box_iou(windows, boxes).masked_fill(~inside, -1.0)
                valid &= inside.any(dim=1) & (overlaps.amax(dim=1) >= min_iou)
            found = valid.nonzero()
            if len(found):
                t = int(found[0])
                return (int(top[t]), int(left[t]), int(crop_h[t]), int(crop_w[t])), inside[t]
        return None

    @staticmethod
    def crop_target(target: Target, window: tuple[int, int, int, int], inside: Tensor) -> Target:
        top, left, crop_h, crop_w = window
        shifted = target["boxes"] - torch.tensor([left, top, left, top], dtype=torch.float32)
        return clip_and_drop(keep_boxes(target, inside, shifted), crop_h, crop_w)

    def __call__(self, image: Tensor, target: Target, generator: torch.Generator | None = None):
        _, height, width = image.shape
        sampled = self.sample(target["boxes"], height, width, generator)
        if sampled is None:
            return image, target
        window, inside = sampled
        top, left, crop_h, crop_w = window
        return image[:, top : top + crop_h, left : left + crop_w], self.crop_target(target, window, inside)


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"

    def __call__(self, image: Tensor, target: Target, generator: torch.Generator | None = None):
        if _rand(generator) >= self.p:
            return image, target
        width = image.shape[-1]
        boxes = target["boxes"]
        flipped = torch.stack((width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]), dim=1)
        return image.flip(-1), dict(target, boxes=flipped)


class Resize:
    """Resize to `size` (an int for a square, or (height, width)), boxes scaled with it."""

    def __init__(self, size: int | tuple[int, int]):
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def __repr__(self) -> str:
        return f"Resize({self.size})"

    def __call__(self, image: Tensor, target: Target, generator: torch.Generator | None = None):
        _, height, width = image.shape
        out_h, out_w = self.size
        scale = torch.tensor([out_w / width, out_h / height, out_w / width, out_h / height])
        return resize_image(image, out_h, out_w), dict(
            target, boxes=_scale_boxes(target["boxes"], scale, out_h, out_w)
        )


class SanitizeBoxes:
    """Clip boxes to the picture and drop degenerate ones; the last step of every preset."""

    def __init__(self, min_size: float = MIN_BOX_SIZE):
        self.min_size = min_size

    def __repr__(self) -> str:
        return f"SanitizeBoxes(min_size={self.min_size})"

    def __call__(self, image: Tensor, target: Target, generator: torch.Generator | None = None):
        return image, clip_and_drop(target, image.shape[1], image.shape[2], self.min_size)


class ZoomOutCropResize:
    """Zoom-out, IoU crop and resize in one step, drawing exactly what the three transforms in a row draw.

    The crop window is chosen on the virtual canvas; only the part of the picture inside the window is resized
    (to its place in the output) and pasted onto an output already filled with the mean colour. A 4x zoom-out
    of a 640x480 picture would otherwise build a 2560x1920 canvas only to shrink it to 300x300.
    """

    def __init__(self, zoom_out: RandomZoomOut, crop: RandomIoUCrop, size: int | tuple[int, int]):
        self.zoom_out, self.crop = zoom_out, crop
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def __repr__(self) -> str:
        return f"ZoomOutCropResize({self.zoom_out}, {self.crop}, size={self.size})"

    def __call__(self, image: Tensor, target: Target, generator: torch.Generator | None = None):
        _, height, width = image.shape
        zoom = self.zoom_out.sample(height, width, generator)
        canvas_h, canvas_w, top, left = zoom if zoom is not None else (height, width, 0, 0)
        target = dict(
            target, boxes=target["boxes"] + torch.tensor([left, top, left, top], dtype=torch.float32)
        )
        sampled = self.crop.sample(target["boxes"], canvas_h, canvas_w, generator)
        if sampled is None:
            window = (0, 0, canvas_h, canvas_w)
        else:
            window, inside = sampled
            target = RandomIoUCrop.crop_target(target, window, inside)
        win_top, win_left, win_h, win_w = window
        out_h, out_w = self.size
        scale_x, scale_y = out_w / win_w, out_h / win_h
        target["boxes"] = _scale_boxes(
            target["boxes"], torch.tensor([scale_x, scale_y, scale_x, scale_y]), out_h, out_w
        )

        # The picture's part inside the window, in canvas pixels, and where it lands in the output.
        x0, x1 = max(win_left, left), min(win_left + win_w, left + width)
        y0, y1 = max(win_top, top), min(win_top + win_h, top + height)
        out_x0, out_x1 = round((x0 - win_left) * scale_x), round((x1 - win_left) * scale_x)
        out_y0, out_y1 = round((y0 - win_top) * scale_y), round((y1 - win_top) * scale_y)
        if x1 <= x0 or y1 <= y0 or out_x1 <= out_x0 or out_y1 <= out_y0:
            return self.zoom_out.fill_tensor().expand(3, out_h, out_w).clone(), target
        piece = resize_image(
            image[:, y0 - top : y1 - top, x0 - left : x1 - left], out_y1 - out_y0, out_x1 - out_x0
        )
        if (out_y0, out_x0, out_y1, out_x1) == (0, 0, out_h, out_w):
            return piece.contiguous(), target
        output = self.zoom_out.fill_tensor().expand(3, out_h, out_w).clone()
        output[:, out_y0:out_y1, out_x0:out_x1] = piece
        return output, target


def build_transforms(preset: str, size: int | tuple[int, int] | None = 300) -> Compose:
    """The augmentation of a preset, ending in a resize to `size` when given: `ssd` (the paper's: zoom-out up
    to 4x, IoU crop, flip, photometric distortion), `ssdlite` (torchvision's SSDLite recipe: IoU crop and
    flip), `ssdlite_zoom` (`ssdlite` after a zoom-out of at most 1.5x) or `none`."""
    if preset not in PRESETS:
        raise UserError(
            f"unknown augmentation preset '{preset}'; choose one of {', '.join(PRESETS)}"
            + did_you_mean(str(preset), PRESETS)
        )
    resize = [Resize(size)] if size is not None else []
    if preset == "ssd":
        if size is None:
            steps = [RandomZoomOut(), RandomIoUCrop(), RandomHorizontalFlip(), PhotometricDistort()]
        else:
            steps = [
                ZoomOutCropResize(RandomZoomOut(), RandomIoUCrop(), size),
                RandomHorizontalFlip(),
                PhotometricDistort(),
            ]
    elif preset == "ssdlite":
        steps = [RandomIoUCrop(), *resize, RandomHorizontalFlip()]  # flipping the small output is cheaper
    elif preset == "ssdlite_zoom":
        zoom_out = RandomZoomOut(max_ratio=LITE_ZOOM_OUT)
        if size is None:
            steps = [zoom_out, RandomIoUCrop(), RandomHorizontalFlip()]
        else:
            steps = [ZoomOutCropResize(zoom_out, RandomIoUCrop(), size), RandomHorizontalFlip()]
    else:
        steps = resize
    return Compose([*steps, SanitizeBoxes()])
