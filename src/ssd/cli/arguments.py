"""Arguments several commands share: the model file and how to read it, the device, the thread count, and
the checks of numeric options (one line naming the option and the value)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ssd.errors import UserError


def add_model_file_arguments(parser: argparse.ArgumentParser, weights_help: str, class_names: bool) -> None:
    """--weights, and what a torchvision file does not say: --arch, --num-classes (and --class-names)."""
    parser.add_argument("--weights", required=True, help=weights_help)
    parser.add_argument("--arch", default=None, help="architecture of a torchvision weights file")
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classes including the background, for a torchvision file (default: read from the file)",
    )
    if class_names:
        parser.add_argument(
            "--class-names",
            default=None,
            metavar="A,B,...",
            help="names of labels 1..K, comma-separated, when the file has none",
        )


def beside_weights(weights: str | Path, name: str) -> Path:
    """Where an output made from a weights file goes by default: `name` in the weights file's folder, so a
    run's exports and reports stay with its checkpoint whatever folder the command is typed in. A
    pretrained name (`ssd weights list`) is no file of the user's (it is downloaded into torch's cache), so
    its outputs go to the current folder, as do those of a file in a folder the user cannot write to (a
    shared or read-only models folder)."""
    path = Path(weights)
    if path.is_file() and _writable(path.parent):
        return path.with_name(name)
    return Path(name)


def _writable(folder: Path) -> bool:
    # The mode bits as well as `os.access`: root may write anywhere, but a folder without any write bit
    # was made read-only on purpose (shared models), and root's outputs do not belong there either.
    return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)


def output_file(out: str | Path, default_name: str) -> Path:
    """An output file's path from its option: an existing folder (`--out exports/`) gets `default_name`
    inside it, rather than failing when the file is written."""
    path = Path(out)
    return path / default_name if path.is_dir() else path


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", help="auto (the GPU if torch sees one), cpu, cuda or cuda:N"
    )


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: one per CPU not busy with other work)",
    )


def class_names_from(text: str | None) -> list[str] | None:
    """`--class-names A,B,...` as a list (None when not given)."""
    return [name.strip() for name in text.split(",")] if text else None


def require_at_least(flag: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise UserError(f"{flag} must be at least {minimum}, got {value}")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """How a dataset is read, beyond its path: where a COCO JSON's pictures are, the largest picture."""
    parser.add_argument(
        "--image-root",
        default=None,
        help="where a COCO JSON's pictures are, when not beside it or in images/",
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=None,
        help="pictures larger than this are refused as decompression bombs (default: 89478485, PIL's)",
    )
