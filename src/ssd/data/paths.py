"""Paths and text files in a dataset as users' tools leave them: folder names in any case, file names written
on other systems, and annotation text that may not be text at all."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath

from ssd.errors import DatasetError


def child_folder(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The subfolder of `folder` called one of `names` (the first that exists), whatever its case."""
    if not folder.is_dir():
        return None
    folders = {entry.name.lower(): Path(entry.path) for entry in os.scandir(folder) if entry.is_dir()}
    for name in names:
        if (folder / name).is_dir():
            return folder / name
        if name.lower() in folders:
            return folders[name.lower()]
    return None


def inside(folder: Path, relative: str) -> Path | None:
    """`folder / relative` when that stays inside `folder`, else None.

    An annotation names its picture relative to the dataset; one that is absolute (`/etc/x.png`,
    `C:\\photos\\x.jpg`) or climbs out with `..` is refused, so a downloaded annotation file cannot make a
    command read (or, converting, copy) files from elsewhere. Backslashes are read as separators: tools on
    Windows write `images\\a.jpg`. Links inside the dataset are followed as the user made them.
    """
    text = str(relative)
    if "\\" in text:
        windows = PureWindowsPath(text)
        if windows.drive or windows.root:
            return None
        text = windows.as_posix()
    path = PurePosixPath(text)
    if path.is_absolute() or not path.parts:
        return None
    normal = os.path.normpath(path.as_posix())
    if normal == ".." or normal.startswith("../") or normal == ".":
        return None
    return folder / normal


def is_file(path: Path) -> bool:
    """`path.is_file()` for a path an annotation names: False rather than an OSError when no file can have
    that name (a part longer than the system allows: ENAMETOOLONG) or a folder on the way cannot be
    searched, so that the caller reports it as missing."""
    return _quietly(path.is_file)


def is_dir(path: Path) -> bool:
    """`path.is_dir()`, False rather than an OSError (see `is_file`)."""
    return _quietly(path.is_dir)


def exists(path: Path) -> bool:
    """`path.exists()`, False rather than an OSError (see `is_file`)."""
    return _quietly(path.exists)


def _quietly(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except OSError:  # pathlib answers False only for ENOENT, ENOTDIR, EBADF and ELOOP
        return False


def read_text_lines(path: Path) -> list[str]:
    """The lines of a text file (UTF-8, with or without a byte-order mark); DatasetError naming the file when
    it cannot be read or is not text."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"{path}: cannot be read ({error.strerror or error})") from None
    if b"\0" in data:
        raise DatasetError(f"{path}: not a text file (it holds NUL bytes)")
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
