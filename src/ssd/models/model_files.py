"""What a model file is, decided by its name alone: the one rule every loader of the toolkit follows.

A TorchScript file is a program: loading it may run its code (a TorchScript class's `__setstate__` runs on
load, its `forward` on every picture). So nothing is ever run because of what a file holds, only because of
what the user named it:

  name ends in     read as                                                     can it run code?
  .torchscript .ts TorchScript, with `torch.jit.load`                          yes: run only files you trust
  .onnx            ONNX, with onnxruntime                                      no
  .xml             OpenVINO IR (with its .bin beside it), with OpenVINO        no
  anything else    weights (`.pt`, `.pth`, ...), with `torch.load(weights_only=True)`  no

A TorchScript archive under any other name (`model.pt`, say) is refused before anything reads it, with a
line saying to rename it if it is trusted; `torch.load(weights_only=True)` would refuse it too, but in words
that do not say what the file is.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from ssd.errors import UserError

WEIGHTS = "weights"
ONNX = "onnx"
TORCHSCRIPT = "torchscript"
OPENVINO = "openvino"

# The name endings of exported files, and what each is read as (`ssd.deploy.formats` has a format per kind).
EXPORTED_SUFFIXES = {".onnx": ONNX, ".torchscript": TORCHSCRIPT, ".ts": TORCHSCRIPT, ".xml": OPENVINO}
KIND_LABELS = {WEIGHTS: "weights", ONNX: "ONNX", TORCHSCRIPT: "TorchScript", OPENVINO: "OpenVINO IR"}


def model_file_kind(path: str | Path) -> str:
    """`"torchscript"`, `"onnx"`, `"openvino"` or `"weights"`, from the ending of the file's name (any letter case)."""
    return EXPORTED_SUFFIXES.get(Path(path).suffix.lower(), WEIGHTS)


def suffixes_of(kind: str) -> list[str]:
    """The name endings read as `kind`, e.g. ['.torchscript', '.ts']."""
    return [suffix for suffix, named in EXPORTED_SUFFIXES.items() if named == kind]


def archive_names(path: str | Path) -> list[str] | None:
    """The member names of a zip archive with the archive's own top folder removed (torch writes every
    member under one folder named after the file it first saved to); None for a file that is no zip."""
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    return [name.split("/", 1)[1] if "/" in name else name for name in names]


def is_torchscript_archive(path: str | Path) -> bool:
    """Whether a file is an archive `torch.jit.save` wrote: it holds `constants.pkl` (TorchScript's tensor
    constants) or compiled code under `code/`, which `torch.save` never writes. Only the zip directory is
    read; nothing in the file is unpickled or run."""
    names = archive_names(path)
    if names is None:
        return False
    return any(
        name == "constants.pkl" or (name.startswith("code/") and name.endswith(".py")) for name in names
    )


def refuse_torchscript_named_as_weights(path: str | Path) -> None:
    """One line for a TorchScript archive named like a weights file (`.pt`, `.pth`, ...): it is not run."""
    path = Path(path)
    if model_file_kind(path) == WEIGHTS and is_torchscript_archive(path):
        raise UserError(
            f"{path}: a TorchScript program, not a weights file, so it was not loaded (a TorchScript file can "
            f"run any code); if you trust it, rename it {path.with_suffix('.torchscript').name}"
        )
