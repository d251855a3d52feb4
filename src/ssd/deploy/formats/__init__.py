"""The export formats, one file each: how `ssd export` writes a file and how `ssd detect` runs one.

Adding a format is a new file defining its `ExportFormat` (a writer, a predictor, which files it claims) and
one line below; `ssd export --format` offers every format in this table.
"""

from __future__ import annotations

from pathlib import Path

from ssd.deploy.formats.base import ExportFormat
from ssd.deploy.formats.onnx import ONNX
from ssd.deploy.formats.torchscript import TORCHSCRIPT
from ssd.deploy.predictor import ExportedPredictor

EXPORT_FORMATS: dict[str, ExportFormat] = {fmt.name: fmt for fmt in (ONNX, TORCHSCRIPT)}
DEFAULT_FORMAT = "onnx"


def format_of_file(path: str | Path) -> ExportFormat | None:
    """The format that claims an exported file, or None for any other file (a checkpoint, say)."""
    return next((fmt for fmt in EXPORT_FORMATS.values() if fmt.claims(Path(path))), None)


def is_exported_model(path: str | Path) -> bool:
    return format_of_file(path) is not None


def load_predictor(path: str | Path, threads: int | None = None) -> ExportedPredictor:
    """The predictor for an exported file; a file no format claims is tried as ONNX, whose loader names the
    problem (no such file, not an ONNX model)."""
    fmt = format_of_file(path) or EXPORT_FORMATS[DEFAULT_FORMAT]
    return fmt.predictor(Path(path), threads)


__all__ = ["EXPORT_FORMATS", "ExportFormat", "format_of_file", "is_exported_model", "load_predictor"]
