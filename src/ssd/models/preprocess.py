"""Preprocessing inside the model: any picture in, a normalised batch at the architecture's input size out.

Doing this in the model (as torchvision does) means a user never has to know an architecture's input size or
normalisation, and an exported model carries them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssd.errors import UserError


def to_chw_tensor(image: Any) -> Tensor:
    """A picture as a `(3, H, W)` tensor: uint8 stays uint8, float stays float (expected in [0, 1]).

    Accepts CHW tensors, HWC numpy arrays and PIL images; grey pictures are repeated to three channels.
    """
    if isinstance(image, Tensor):
        tensor = image
    elif isinstance(image, np.ndarray):
        array = image if image.ndim == 3 else image[:, :, None]
        if not array.flags.writeable:  # e.g. np.asarray(PIL image); torch wants memory it may write
            array = array.copy()
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    elif hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image, without importing PIL here
        array = np.asarray(image.convert("RGB"))
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
    else:
        raise UserError(
            f"cannot use a picture of type {type(image).__name__}: give a tensor, numpy array or PIL image"
        )
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
        raise UserError(f"a picture must be (3, H, W) or (H, W, 3), got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    elif tensor.shape[0] == 4:
        tensor = tensor[:3]
    return tensor


class Preprocess(nn.Module):
    """Resize (bilinear, `align_corners=False`) to the input size and normalise with the model's mean/std."""

    def __init__(
        self,
        input_size: tuple[int, int],
        image_mean: Sequence[float],
        image_std: Sequence[float],
        eight_bit: bool = False,
    ):
        super().__init__()
        self.input_size = tuple(input_size)
        # Resize as 8-bit values (`resized_uint8`): for a graph that quantizes its input to 8 bits anyway
        self.eight_bit = eight_bit
        self.register_buffer(
            "image_mean", torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1), False
        )
        self.register_buffer(
            "image_std", torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1), False
        )

    def forward(self, images: Tensor | Sequence[Any]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Returns the batch `(B, 3, H_in, W_in)` and each picture's original (height, width)."""
        if self.eight_bit:
            batch, original_sizes = self.resized_uint8(images)
            return (batch.float().div_(255.0) - self.image_mean) / self.image_std, original_sizes
        device = self.image_mean.device
        if isinstance(images, Tensor) and images.ndim == 4:
            original_sizes = [tuple(images.shape[-2:])] * len(images)
            batch = self._resized_unit_float(images.to(device))
        else:
            pictures = [to_chw_tensor(image).to(device) for image in images]
            original_sizes = [tuple(p.shape[-2:]) for p in pictures]
            batch = (
                torch.cat([self._resized_unit_float(p[None]) for p in pictures])
                if pictures
                else (torch.empty(0, 3, *self.input_size, device=device))
            )
        return (batch - self.image_mean) / self.image_std, original_sizes

    def _resized_unit_float(self, pictures: Tensor) -> Tensor:
        """`(B, 3, H, W)` pictures (uint8 or float in [0, 1]) resized, as floats in [0, 1].

        Resizing is linear, so uint8 pictures are divided by 255 after it, on the smaller picture.
        """
        batch = pictures.float()  # keeps the memory layout: a decoded HWC picture is channels-last
        if tuple(batch.shape[-2:]) != self.input_size:
            batch = self._resize(batch)
        if pictures.dtype == torch.uint8:
            batch = batch.div_(255.0)
        return batch

    def _resize(self, batch: Tensor) -> Tensor:
        if not batch.is_contiguous():  # channels-last pictures have a fast kernel of their own
            return F.interpolate(batch, size=self.input_size, mode="bilinear", align_corners=False)
        # Each channel resized as a picture of its own: the same arithmetic, but ATen's bilinear kernel takes
        # 1.54 ms on one thread for a 3-channel 480x640 picture and 0.45 ms for three 1-channel ones (on two
        # threads both take 0.29 ms).
        n, c, h, w = batch.shape
        single_channel = batch.view(n * c, 1, h, w)
        resized = F.interpolate(single_channel, size=self.input_size, mode="bilinear", align_corners=False)
        return resized.view(n, c, *self.input_size)

    def resized_uint8(self, images: Tensor | Sequence[Any]) -> tuple[Tensor, list[tuple[int, int]]]:
        """The pictures resized as 8-bit values: a uint8 batch `(B, 3, H_in, W_in)` in channels-last memory
        (so `batch.permute(0, 2, 3, 1)` is an HWC array without a copy), and each original (height, width).

        PyTorch's uint8 bilinear kernel: the same sampling as the float resize, each value rounded to a whole
        level (at most 1 of 255 from it). A float picture is rounded to 8 bits first. On a 480x640 picture,
        one thread: 0.24 ms, against 0.82 ms for the float resize; and 8-bit input is what an INT8 graph
        keeps of its input anyway, since its first layer quantizes it to 256 levels.
        """
        if isinstance(images, Tensor) and images.ndim == 4:
            images = list(images)
        device = self.image_mean.device
        pictures = [_as_uint8(to_chw_tensor(image).to(device)) for image in images]
        if not pictures:
            return torch.empty(0, 3, *self.input_size, dtype=torch.uint8, device=device), []
        resized = [
            p[None]
            if tuple(p.shape[-2:]) == self.input_size
            else F.interpolate(
                p[None].contiguous(memory_format=torch.channels_last),
                size=self.input_size,
                mode="bilinear",
                align_corners=False,
            )
            for p in pictures
        ]
        batch = torch.cat(resized).contiguous(memory_format=torch.channels_last)
        return batch, [tuple(p.shape[-2:]) for p in pictures]


def _as_uint8(picture: Tensor) -> Tensor:
    """A picture as uint8: float ones (in [0, 1]) rounded to the nearest of 256 levels."""
    if picture.dtype == torch.uint8:
        return picture
    return picture.float().mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
