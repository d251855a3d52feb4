"""Reading picture files: one reader for datasets, `ssd detect` and every command that takes a picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ssd.errors import DatasetError

# File name endings read as pictures when a format lists a folder rather than naming each picture.
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class UnreadablePicture(DatasetError):
    """A picture file that is missing or cannot be decoded; `reason` says why, without the path."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


def read_picture(path: Path) -> Tensor:
    """A picture file as a uint8 (3, H, W) RGB tensor; `UnreadablePicture` naming the file if it cannot be read."""
    try:
        with Image.open(path) as picture:
            array = np.array(picture if picture.mode == "RGB" else picture.convert("RGB"))
    except FileNotFoundError:
        raise UnreadablePicture(path, "picture not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UnreadablePicture(path, f"picture cannot be decoded ({error})") from None
    # A (3, H, W) view of the (H, W, 3) pixels: copying to channels-first would cost as much as the resize.
    return torch.from_numpy(array).permute(2, 0, 1)


def picture_size(path: Path, verify: str) -> tuple[int, int]:
    """(height, width) of a picture file, checked to the `verify` level; DatasetError naming the problem."""
    if verify == "decode":
        image = read_picture(path)
        return int(image.shape[1]), int(image.shape[2])
    try:
        with Image.open(path) as picture:
            width, height = picture.size
    except FileNotFoundError:
        raise UnreadablePicture(path, "picture not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UnreadablePicture(path, f"not a picture ({error})") from None
    return height, width
