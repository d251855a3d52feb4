"""The export formats, one file each: how `ssd export` writes a file and how `ssd detect` runs one.

Adding a format is a new file defining its `ExportFormat` (a writer, a predictor), one line below, and its
name endings in `ssd.models.model_files.EXPORTED_SUFFIXES`: a file is run as a format only when its name
says so, never because of what it holds. `ssd export --format` offers every format in this table.
"""

from __future__ import annotations

from pathlib import Path

from ssd.deploy.formats.base import ExportFormat
from ssd.deploy.formats.onnx import ONNX
from ssd.deploy.formats.openvino import OPENVINO
from ssd.deploy.formats.torchscript import TORCHSCRIPT
from ssd.deploy.predictor import ExportedPredictor
from ssd.errors import UserError
from ssd.models.model_files import EXPORTED_SUFFIXES, KIND_LABELS, model_file_kind, suffixes_of

EXPORT_FORMATS: dict[str, ExportFormat] = {fmt.name: fmt for fmt in (ONNX, TORCHSCRIPT, OPENVINO)}
DEFAULT_FORMAT = "onnx"
# Each format's name is a kind of file of `ssd.models.model_files` (tests/test_deploy_safety.py checks it).


def format_of_file(path: str | Path) -> ExportFormat | None:
    """The format a file is read as, from the ending of its name; None for any other file (weights)."""
    return EXPORT_FORMATS.get(model_file_kind(path))


def is_exported_model(path: str | Path) -> bool:
    return format_of_file(path) is not None


def load_predictor(path: str | Path, threads: int | None = None) -> ExportedPredictor:
    """The predictor for an exported file, chosen by the ending of its name."""
    fmt = format_of_file(path)
    if fmt is None:
        endings = ", ".join(EXPORTED_SUFFIXES)
        raise UserError(f"{path}: not named as an exported model (those end in {endings})")
    return fmt.predictor(Path(path), threads)


def require_export_name(path: str | Path, format: str) -> None:
    """Refuse to write a `format` file under a name that would be read as something else: files are read by
    the ending of their name (a TorchScript file named .pt would only ever be refused as weights)."""
    if model_file_kind(path) != format:
        label = KIND_LABELS[format]
        article = "an" if label[0] in "AEIOU" else "a"
        endings = " or ".join(suffixes_of(format))
        read_as = KIND_LABELS[model_file_kind(path)]
        raise UserError(
            f"{path}: {article} {label} export must be named {endings} (files are read by the ending of their name, "
            f"and this one would be read as {read_as})"
        )


__all__ = [
    "EXPORT_FORMATS",
    "ExportFormat",
    "format_of_file",
    "is_exported_model",
    "load_predictor",
    "require_export_name",
]
