"""Reading `.pt` files safely: `weights_only=True`, so a downloaded file cannot run code on load.

Which files are read here at all is `ssd.models.model_files`' rule: a file named as an export (`.onnx`, `.xml`,
`.torchscript`, `.ts`) is refused as not weights, and a TorchScript archive under a weights name is refused
before torch sees it.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ssd.errors import UserError
from ssd.models.model_files import KIND_LABELS, WEIGHTS, model_file_kind, refuse_torchscript_named_as_weights

# The first byte of a pickle of protocol 2 or later: torch's legacy (non-zip) files start with one.
_PICKLE_START = 0x80


def load_pt_file(path: str | Path, what: str = "weights file") -> Any:
    """The content of a PyTorch file, on the CPU; a one-line error for a missing, corrupt or unsafe file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a {what}")
    if not path.is_file():
        raise UserError(f"{path}: no such {what}")
    kind = model_file_kind(path)
    if kind != WEIGHTS:
        raise UserError(
            f"{path}: named as an exported {KIND_LABELS[kind]} model, not a {what}; this takes a checkpoint or "
            "a weights file (.pt, .pth)"
        )
    refuse_torchscript_named_as_weights(path)
    try:
        with warnings.catch_warnings():
            # A plain pickle (not torch.save's) makes torch warn about its protocol before it fails or
            # loads: noise beside the one line a bad file gets.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt, truncated or code-carrying files
        # torch's own words (an unpickler's KeyError, a C++ assertion) mean nothing to a user: say what
        # the file is instead, from its bytes.
        raise UserError(f"{path}: not a readable {what}: {_what_it_is(path, error)}") from None


def _what_it_is(path: Path, error: Exception) -> str:
    """What a file that torch cannot read is: empty, another kind of file, damaged, or refused as unsafe."""
    try:
        with path.open("rb") as stream:
            start = stream.read(2)
    except OSError as os_error:
        return f"it cannot be read ({os_error.strerror or type(os_error).__name__})"
    if not start:
        return "the file is empty"
    if start == b"PK" and not zipfile.is_zipfile(path):
        # torch.save writes zip archives; one without its directory at the end was cut short.
        return "damaged or truncated"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return "damaged or truncated"
        if not any(name.endswith("/data.pkl") for name in names):
            return "a zip archive of other files, not one PyTorch wrote"
    elif start[0] != _PICKLE_START:
        return "not a file PyTorch wrote"
    # A PyTorch file: either it holds Python objects, which weights_only loading refuses by design, or its
    # bytes are damaged (truncated by an interrupted copy, say).
    if isinstance(error, pickle.UnpicklingError) and "weights_only" in str(error).lower():
        return "it holds Python objects besides tensors and plain values, refused since loading them could run code"
    return "a PyTorch file, damaged or truncated"


def non_finite_tensor(state: Mapping[str, Any]) -> str | None:
    """The name of the first floating-point tensor of a state dict holding NaN or infinity, else None.
    Such weights only ever give NaN scores: no detection at all, without a word."""
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            return str(name)
    return None


def refuse_non_finite(state: Mapping[str, Any], path: str | Path, part: str = "weights") -> None:
    """One line naming the file and the tensor, for a file whose weights are not all finite."""
    name = non_finite_tensor(state)
    if name is not None:
        raise UserError(f"{path}: its {part} hold NaN or infinity ({name}); the file cannot be used")
