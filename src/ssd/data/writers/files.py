"""The file work every writer shares: unique names, copied pictures, text files written whole or not at all."""

from __future__ import annotations

import shutil
from pathlib import Path

from ssd.errors import DatasetError


def unique_stem(stem: str, taken: set[str]) -> str:
    """`stem`, or `stem_2`, `stem_3`, ... when it is taken; the result is added to `taken`.

    Names are compared case-folded: on the file systems of Windows and macOS `A.jpg` and `a.jpg` are one file.
    """
    candidate, number = stem, 1
    while candidate.casefold() in taken:
        number += 1
        candidate = f"{stem}_{number}"
    taken.add(candidate.casefold())
    return candidate


def copy_picture(source: Path, destination: Path) -> None:
    """Copy a picture byte for byte (with its times): a converted dataset shows exactly the pictures it had."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copy2(source, destination)
    except OSError as error:
        raise DatasetError(
            f"{source}: cannot be copied to {destination} ({error.strerror or error})"
        ) from None


def write_text_atomically(path: Path, text: str) -> None:
    """Write `path` through a temporary file and a rename, so an interrupted write never leaves half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
