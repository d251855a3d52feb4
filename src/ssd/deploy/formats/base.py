"""What an export format is to the rest of the package: how to write a file, and how to run one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ssd.deploy.predictor import ExportedPredictor


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str  # the file name ending `ssd export` gives it; which endings are read as it: ssd.models.model_files
    any_batch_size: bool  # whether its files take any batch size without --dynamic-batch
    # (folded model, path, example input, with post-processing, dynamic batch, metadata JSON) -> writes the file
    write: Callable[..., None]
    predictor: Callable[[Path, int | None], ExportedPredictor]  # (path, threads) -> a predictor for the file
    # () -> None, raising a one-line error when an optional package it needs is missing: checked before
    # anything is built or written, so a missing package never leaves a half-made file behind
    require_packages: Callable[[], None] = lambda: None
    # path -> the other files written with it (an OpenVINO IR's .bin): removed with it when a check fails
    companions: Callable[[Path], list[Path]] = lambda path: []
