"""Reading picture files: one reader for datasets, `ssd detect` and every command that takes a picture.

Whatever a user brings, a picture comes out as uint8 RGB with its true brightness and colours, turned the way
its EXIF orientation says it is shown, or as `UnreadablePicture` with a short reason: a missing file, a
folder, a file no format recognises, a broken or truncated one, one whose header claims more pixels than
`max_pixels` (a decompression bomb: a few KB that would decode to gigabytes). Nothing from inside Pillow
escapes, neither an exception nor Pillow's own decompression-bomb warning.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import ExifTags, Image, UnidentifiedImageError
from torch import Tensor

from ssd.data.paths import is_dir
from ssd.errors import DatasetError

try:
    from PIL import ImageCms
except ImportError:  # Pillow built without LittleCMS: CMYK pictures then take Pillow's own conversion
    ImageCms = None

# File name endings read as pictures when a format lists a folder rather than naming each picture.
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# The most pixels (width x height) read by default: Pillow's own default limit, `Image.MAX_IMAGE_PIXELS` as
# Pillow ships it (1024 * 1024 * 1024 // 4 // 3, about 9459 x 9459). Stated here rather than read from
# Pillow so that a program which changes Pillow's global does not change what this package accepts.
MAX_PIXELS = 89_478_485

VERIFY_LEVELS = ("exists", "header", "decode")

_ORIENTATION_TAG = ExifTags.Base.Orientation
# How to turn the stored pixels into the picture as shown, for each EXIF orientation (1: as stored).
_SHOW = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# And back to the stored pixels: each flip undoes itself, the two quarter turns undo each other.
_UNDO = {**_SHOW, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}

# Pillow's decompression-bomb check reads the module global `Image.MAX_IMAGE_PIXELS` (see
# `_without_pillow_limit`); this lock lets one call at a time lift it and put it back.
_PILLOW_LIMIT_LOCK = threading.Lock()


class UnreadablePicture(DatasetError):
    """A picture file that is missing or cannot be decoded; `reason` says why, without the path."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


class PictureTooLarge(UnreadablePicture):
    """A picture with more pixels than allowed: refused from its header, before decoding."""


@dataclass(frozen=True)
class PictureInfo:
    """A picture's size as shown (EXIF orientation applied) and as stored in the file."""

    height: int  # as shown: orientations 5-8 swap width and height
    width: int
    stored_height: int  # the pixels as stored in the file, before orientation
    stored_width: int
    orientation: int  # EXIF orientation tag 1..8 (1 when absent or invalid)


def picture_info(path: Path, verify: str = "header", max_pixels: int | None = None) -> PictureInfo:
    """Sizes and orientation of a picture file, checked to the `verify` level: "exists" and "header" read
    only the header (cheap, nothing decoded), "decode" decodes every pixel (finds truncated files).
    `UnreadablePicture` when the file cannot be read or has more than `max_pixels` (None: MAX_PIXELS)."""
    if verify not in VERIFY_LEVELS:
        raise ValueError(f"verify must be one of {', '.join(VERIFY_LEVELS)}, got {verify!r}")
    picture, pillow_limit = _open(path, max_pixels)
    with picture:
        stored_width, stored_height = _stored_size(picture)
        orientation = _orientation(picture)
        if verify == "decode":
            with _decoding(pillow_limit, stored_width * stored_height):
                _decode(path, picture, orient=False)
    swapped = orientation >= 5  # 5-8 turn the picture a quarter, or mirror it across a diagonal
    return PictureInfo(
        height=stored_width if swapped else stored_height,
        width=stored_height if swapped else stored_width,
        stored_height=stored_height,
        stored_width=stored_width,
        orientation=orientation,
    )


def picture_size(path: Path, verify: str, max_pixels: int | None = None) -> tuple[int, int]:
    """(height, width) of a picture file as shown, checked to the `verify` level (see `picture_info`)."""
    info = picture_info(path, verify, max_pixels)
    return info.height, info.width


def read_picture(
    path: Path | BinaryIO,
    max_pixels: int | None = None,
    orient: bool = True,
    shorter_side_at_least: int | None = None,
) -> Tensor:
    """A picture file (or an open binary stream, such as an upload's bytes in `io.BytesIO`) as a uint8
    (3, H, W) RGB tensor, turned as its EXIF orientation says when `orient` (else the pixels as stored);
    `UnreadablePicture` naming the file if it cannot be read or has more than `max_pixels` (None:
    MAX_PIXELS). With `shorter_side_at_least`, a JPEG may be decoded at 1/2, 1/4 or 1/8 of its size, as
    long as its shorter side keeps that many pixels (`_decode_reduced`): the caller scales its boxes."""
    picture, pillow_limit = _open(path, max_pixels)
    with picture:
        if shorter_side_at_least is not None:
            _decode_reduced(picture, shorter_side_at_least)
        with _decoding(pillow_limit, picture.width * picture.height):
            array = _decode(path, picture, orient)
    # A (3, H, W) view of the (H, W, 3) pixels: copying to channels-first would cost as much as the resize.
    return torch.from_numpy(array).permute(2, 0, 1)


def boxes_as_shown(boxes: Tensor, orientation: int, stored_width: int, stored_height: int) -> Tensor:
    """Boxes (N, 4) xyxy in a picture's stored pixels, moved to where they lie once its EXIF `orientation`
    turns it (`read_picture` with `orient`): for a format that, like YOLO, states no picture size and is
    always read turned, boxes drawn on the stored pixels must be written turned."""
    w, h = float(stored_width), float(stored_height)
    x1, y1, x2, y2 = boxes.unbind(-1)
    corners = {  # (new x1, new x2) and (new y1, new y2) before ordering, as each turn moves a point (x, y)
        1: ((x1, x2), (y1, y2)),
        2: ((w - x1, w - x2), (y1, y2)),
        3: ((w - x1, w - x2), (h - y1, h - y2)),
        4: ((x1, x2), (h - y1, h - y2)),
        5: ((y1, y2), (x1, x2)),
        6: ((h - y1, h - y2), (x1, x2)),
        7: ((h - y1, h - y2), (w - x1, w - x2)),
        8: ((y1, y2), (w - x1, w - x2)),
    }
    (xa, xb), (ya, yb) = corners.get(orientation, corners[1])
    return torch.stack(
        [torch.minimum(xa, xb), torch.minimum(ya, yb), torch.maximum(xa, xb), torch.maximum(ya, yb)], -1
    )


@contextmanager
def _without_pillow_limit() -> Iterator[int | None]:
    """Pillow's own decompression-bomb check switched off for the code inside; yields Pillow's limit.

    Pillow has no per-call limit: it compares every picture it opens (and some it decodes: GIF frames,
    TIFF tiles) with the global `Image.MAX_IMAGE_PIXELS`, warns above it and raises
    `DecompressionBombError`, which is not an OSError, above twice it. That would refuse pictures a caller
    allows with a larger `max_pixels`, and would refuse bombs before their size could be named. So the
    global is lifted for just this call and put back in `finally`; the lock keeps two threads from putting
    back each other's value, and Pillow's limit as it stands outside these calls is what this yields.
    """
    with _PILLOW_LIMIT_LOCK:
        pillow_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield pillow_limit
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit


def _decoding(pillow_limit: int | None, pixels: int) -> AbstractContextManager:
    """What decoding `pixels` (already checked against our own limit) runs under: Pillow's limit lifted
    only when Pillow would refuse or warn, so that everyday pictures decode in parallel, outside the lock."""
    if pillow_limit is not None and pixels > pillow_limit:
        return _without_pillow_limit()
    return nullcontext()


def _open(path: Path, max_pixels: int | None) -> tuple[Image.Image, int | None]:
    """The picture with only its header read, and Pillow's limit (for `_decoding`); refused from the header,
    before any pixel is decoded, when it has more than `max_pixels` (None: MAX_PIXELS)."""
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    try:
        with _without_pillow_limit() as pillow_limit:
            picture = Image.open(path)
    # Pillow's format plugins raise nearly any exception type for a malformed header (OSError, SyntaxError,
    # struct.error, IndexError, ValueError, EOFError, ...); none of them may stop a run over many pictures.
    except Exception as error:
        raise UnreadablePicture(path, _open_failure(path, error)) from None
    width, height = picture.size
    if width * height > limit:
        picture.close()
        raise PictureTooLarge(
            path,
            f"{width}x{height} is {width * height:,} pixels, more than the {limit:,} allowed "
            "(a guard against decompression bombs); --max-pixels allows larger",
        )
    return picture, pillow_limit


def _open_failure(path: Path, error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return "picture not found"
    if isinstance(error, IsADirectoryError) or not hasattr(path, "read") and is_dir(Path(path)):
        return "a folder, not a picture"
    if isinstance(error, OSError) and error.strerror:  # a name too long for the file system, ...
        return f"cannot be read ({error.strerror})"
    if isinstance(error, PermissionError):
        return "no permission to read the picture"
    if isinstance(error, UnidentifiedImageError):  # its message repeats the path
        return "not a picture (no picture format recognises the file)"
    return f"not a picture ({_describe(error)})"


def _stored_size(picture: Image.Image) -> tuple[int, int]:
    """(width, height) of the pixels as stored in the file. Pillow gives a TIFF's size as shown already (and
    turns its pixels while decoding), so a TIFF's stored size is read from its tags."""
    if picture.format == "TIFF":
        return int(picture.tag_v2[256]), int(picture.tag_v2[257])  # ImageWidth, ImageLength
    return picture.size


def _describe(error: BaseException) -> str:
    if isinstance(error, MemoryError):
        return "not enough memory to decode it"
    text = str(error) or type(error).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _orientation(picture: Image.Image) -> int:
    """The EXIF orientation 1..8 as far as the header gives it; 1 when absent, invalid or broken.

    The base `Image.getexif` is called on purpose: the PNG plugin's own override decodes the whole picture
    to look for an EXIF chunk stored after the pixels, which would make reading a header as slow as
    decoding, and would let `picture_info` and `read_picture` disagree about the size.
    """
    try:
        orientation = int(Image.Image.getexif(picture).get(_ORIENTATION_TAG, 1))
    # A broken EXIF block raises whatever its parser hits; the picture itself is still fine.
    except Exception:
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def _decode_reduced(picture: Image.Image, shorter_side_at_least: int) -> None:
    """Have a JPEG decode at the smallest of 1/2, 1/4, 1/8 of its size whose shorter side is still at least
    `shorter_side_at_least` (Pillow's `draft`: the decoder skips the finer frequencies, so a 2000 px picture
    decodes at half size in about half the time, and everything after it works on a quarter of the pixels).
    Other formats, and pictures not that much larger, decode whole."""
    if picture.format != "JPEG":
        return
    width, height = picture.size
    scale = shorter_side_at_least / min(width, height)
    if scale > 0.5:
        return
    picture.draft(picture.mode, (math.ceil(width * scale), math.ceil(height * scale)))


def _decode(path: Path, picture: Image.Image, orient: bool) -> np.ndarray:
    """The (H, W, 3) uint8 RGB pixels of an opened picture; `UnreadablePicture` when they cannot be decoded."""
    try:
        stored_orientation = _orientation(picture)
        picture.load()
        # Pillow's TIFF reader turns the pixels to the shown orientation itself while decoding, and removes
        # the tag: what is left to turn is what the EXIF says after decoding (for the others, all of it).
        orientation_left = _orientation(picture)
        if orient:
            turn = _SHOW.get(orientation_left)
        else:
            turn = _UNDO.get(stored_orientation) if orientation_left != stored_orientation else None
        rgb = _as_rgb(picture)
        if turn is not None:
            rgb = rgb.transpose(turn)
        # Plain RGB as stored (the usual JPEG) reaches here untouched: one copy of the pixels, into numpy.
        return np.array(rgb)
    # As in `_open`: Pillow's decoders raise nearly any exception type (OSError for a truncated file,
    # ValueError, SyntaxError, struct.error, IndexError, EOFError, ZeroDivisionError, MemoryError, ...).
    except Exception as error:
        raise UnreadablePicture(path, f"picture cannot be decoded ({_describe(error)})") from None


def _as_rgb(picture: Image.Image) -> Image.Image:
    """The picture in mode RGB with its true brightness and colours, whatever mode it is stored in.

    An alpha channel is dropped, keeping the colours under it, as OpenCV's imread does: compositing onto a
    background would invent a colour (white? black?) that the same picture read by other tools, and so a
    model trained on them, never sees. A multi-frame file (GIF, TIFF) gives its first frame, the one
    Pillow opens at.
    """
    mode = picture.mode
    if mode == "RGB":
        return picture
    if mode == "I" or mode.startswith("I;16"):
        return _grey_rgb(_integer_grey(np.array(picture)))
    if mode == "F":
        return _grey_rgb(_float_grey(np.array(picture)))
    if mode in ("P", "PA"):
        # Through RGBA: a palette's transparency (an index, or bytes per palette entry) becomes alpha, which
        # is then dropped; converting straight to RGB warns about the bytes form.
        return picture.convert("RGBA").convert("RGB")
    if mode == "CMYK":
        return _cmyk_rgb(picture)
    # 1, L, LA, RGBA, RGBX, RGBa, YCbCr, LAB, HSV: Pillow's own conversions are exact for these. 16-bit RGB
    # and RGBA PNGs arrive as RGB and RGBA already reduced to 8 bits (Pillow 13 keeps each high byte).
    return picture.convert("RGB")


def _integer_grey(values: np.ndarray) -> np.ndarray:
    """Integer greyscale (I;16*, or I: 32-bit) as uint8. Pillow's own conversion clips at 255, which leaves a
    16-bit picture almost white; here the 16-bit range 0..65535 maps to 0..255 by the high byte (32768, mid
    grey, gives 128), as Pillow does for 16-bit RGB PNGs and OpenCV for every 16-bit picture. Mode I is read
    the same way when its values fit 16 bits (Pillow gives 16-bit PNGs and TIFFs as I in some versions);
    beyond that it has no agreed white, so the largest value is white. Negative values are black."""
    values = np.clip(values.astype(np.int64), 0, None)
    largest = int(values.max(initial=0))
    if largest <= 65535:
        return (values >> 8).astype(np.uint8)
    return (values * 255 // largest).astype(np.uint8)


def _float_grey(values: np.ndarray) -> np.ndarray:
    """Float greyscale (F) as uint8: values within 0..1 (the usual float convention) scale to 0..255;
    any larger value means the picture is in 0..255 already, and is clipped to it. NaN is black, infinity
    white or black."""
    finite = values[np.isfinite(values)]
    scale = 255.0 if finite.size == 0 or float(finite.max()) <= 1.0 else 1.0
    values = np.nan_to_num(values.astype(np.float64) * scale, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _grey_rgb(grey: np.ndarray) -> Image.Image:
    return Image.fromarray(grey).convert("RGB")


def _cmyk_rgb(picture: Image.Image) -> Image.Image:
    """CMYK to sRGB through the picture's embedded ICC profile (the only way to get a press profile's
    colours right), else Pillow's plain conversion, which also reads Adobe's inverted CMYK JPEGs right."""
    profile = picture.info.get("icc_profile")
    if profile and ImageCms is not None:
        try:
            converted = ImageCms.profileToProfile(
                picture,
                ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                ImageCms.createProfile("sRGB"),
                outputMode="RGB",
            )
        # A profile LittleCMS cannot parse, or one that is not a CMYK profile: Pillow's conversion below.
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            converted = None
        if converted is not None:
            return converted
    return picture.convert("RGB")
