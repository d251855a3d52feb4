"""A request's picture and settings, read with limits; every problem is a `RequestError` naming it.

The picture comes as a multipart field named `image` or as the raw request body (`curl --data-binary`).
The body is read in chunks and refused as soon as it passes the upload limit, so an oversized upload
never sits whole in memory; the picture is decoded with the same code and decompression-bomb guard as
training reads pictures with (`ssd.data.pictures`).
"""

from __future__ import annotations

import io
import math
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from torch import Tensor

from ssd.data.pictures import PictureTooLarge, UnreadablePicture, read_picture
from ssd.deploy.selection import resolve_classes
from ssd.errors import UserError, did_you_mean

PICTURE_FIELD = "image"
DEFAULT_SCORE = 0.3  # as `ssd detect`
DEFAULT_MAX_DETECTIONS = 100
PARAMETERS = ("score", "classes", "max_det")  # as query parameters or form fields (a form field wins)


class RequestError(Exception):
    """A request the server cannot answer with detections: `status` (4xx) and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class DetectRequest:
    picture_bytes: bytes
    score: float
    labels: set[int] | None  # None: every class
    max_detections: int


async def read_detect_request(
    request: Request, max_bytes: int, class_names: Sequence[str] | None, num_classes: int
) -> DetectRequest:
    body = await _read_body(request, max_bytes)
    settings: dict[str, str] = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        picture, form_settings = await _from_form(request, body)
        settings.update(form_settings)
    else:  # any other type is the picture itself (curl --data-binary sends it as form-urlencoded)
        picture = body
    unknown = sorted(set(settings) - set(PARAMETERS))
    if unknown:
        raise RequestError(
            400,
            f"unknown parameter {unknown[0]!r}{did_you_mean(unknown[0], PARAMETERS)} "
            f"(parameters: {', '.join(PARAMETERS)})",
        )
    if not picture:
        raise RequestError(
            400, f"empty upload: send a picture as the multipart field '{PICTURE_FIELD}' or as the body"
        )
    return DetectRequest(
        picture,
        _score(settings.get("score")),
        _labels(settings.get("classes"), class_names, num_classes),
        _max_detections(settings.get("max_det")),
    )


def decode_picture(data: bytes, max_pixels: int | None) -> Tensor:
    """The uploaded bytes as a (3, H, W) uint8 picture; a 400 (not a picture, truncated) or 413 (too many
    pixels) naming the problem."""
    try:
        return read_picture(io.BytesIO(data), max_pixels=max_pixels)
    except PictureTooLarge as error:
        reason = error.reason.replace("--max-pixels allows larger", "the server's --max-pixels allows larger")
        raise RequestError(413, f"the uploaded picture, {reason}") from None
    except UnreadablePicture as error:
        raise RequestError(400, f"upload: {error.reason}") from None


async def _read_body(request: Request, max_bytes: int) -> bytes:
    limit = f"the {max_bytes / 2**20:g} MB upload limit (--max-upload-mb)"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(413, f"the upload is {int(declared):,} bytes, over {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise RequestError(413, f"the upload is over {limit}")
    return bytes(body)


async def _from_form(request: Request, body: bytes) -> tuple[bytes, dict[str, str]]:
    async def once() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(request.headers, once(), max_files=4, max_fields=16).parse()
    except MultiPartException as error:
        raise RequestError(400, f"the multipart form cannot be read ({error.message})") from None
    try:
        field = form.get(PICTURE_FIELD)
        if field is None:
            given = ", ".join(repr(key) for key in form.keys()) or "none"
            raise RequestError(400, f"no field named '{PICTURE_FIELD}' in the form (fields given: {given})")
        if not isinstance(field, UploadFile):
            raise RequestError(400, f"the field '{PICTURE_FIELD}' holds text, not a file")
        picture = await field.read()
        return picture, {key: value for key, value in form.items() if isinstance(value, str)}
    finally:
        await form.close()


def _score(text: str | None) -> float:
    if text is None:
        return DEFAULT_SCORE
    try:
        score = float(text)
    except ValueError:
        raise RequestError(400, f"score must be a number between 0 and 1, got {text[:40]!r}") from None
    if not (math.isfinite(score) and 0.0 <= score <= 1.0):
        raise RequestError(400, f"score must be a number between 0 and 1, got {text[:40]!r}")
    return score


def _max_detections(text: str | None) -> int:
    if text is None:
        return DEFAULT_MAX_DETECTIONS
    if not text.strip().isdigit() or not 1 <= int(text) <= 10_000:
        raise RequestError(400, f"max_det must be a whole number from 1 to 10000, got {text[:40]!r}")
    return int(text)


def _labels(text: str | None, class_names: Sequence[str] | None, num_classes: int) -> set[int] | None:
    if text is None or not text.strip():
        return None
    try:
        return resolve_classes([text], class_names, num_classes, setting="classes")
    except UserError as error:
        raise RequestError(400, str(error)) from None
