"""Finding and reading the pictures and videos a user points `ssd detect` at.

Folders are searched recursively, by extension. A file that cannot be read is reported (its name and why)
through `on_skip` and skipped; the caller counts them. Videos are read with OpenCV, frame by frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssd.data.pictures import PICTURE_SUFFIXES
from ssd.errors import UserError, require_extra

# Besides the dataset formats' picture files, single pictures in a few formats datasets do not use.
PICTURE_EXTENSIONS = {*PICTURE_SUFFIXES, ".gif", ".ppm", ".pgm"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv"}


@dataclass(frozen=True)
class MediaFile:
    path: Path
    relative: Path  # where its outputs go under the output folder
    kind: str  # "picture" or "video"


def find_media(inputs: list[str | Path], on_skip: Callable[[Path, str], None]) -> list[MediaFile]:
    """Pictures and videos named by `inputs` (files, or folders searched recursively), in a stable order."""
    found: list[MediaFile] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            for path in sorted(p for p in entry.rglob("*") if p.is_file()):
                kind = media_kind(path)
                if kind is not None:
                    found.append(MediaFile(path, Path(entry.name) / path.relative_to(entry), kind))
        elif entry.is_file():
            kind = media_kind(entry)
            if kind is None:
                on_skip(entry, f"not a picture or video extension ({entry.suffix or 'none'})")
            else:
                found.append(MediaFile(entry, Path(entry.name), kind))
        else:
            on_skip(entry, "no such file or folder")
    return found


def media_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in PICTURE_EXTENSIONS:
        return "picture"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


def open_video(path: Path):
    """An OpenCV capture of `path`, its frame rate and frame count; `UserError` when it cannot be read."""
    cv2 = require_extra("cv2", "video", "reading videos")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise UserError(f"{path}: cannot open the video")
    ok, _ = capture.read()
    if not ok:
        capture.release()
        raise UserError(f"{path}: the video has no readable frame")
    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    return capture, fps, max(frames, 0)


def video_frames(capture) -> Iterator[np.ndarray]:
    """RGB uint8 frames until the video ends (or a frame cannot be decoded)."""
    import cv2

    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
