"""Reading `.pt` files safely: `weights_only=True`, so a downloaded file cannot run code on load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ssd.errors import UserError


def load_pt_file(path: str | Path, what: str = "weights file") -> Any:
    """The content of a PyTorch file, on the CPU; a one-line error for a missing, corrupt or unsafe file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such {what}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt, truncated or code-carrying files
        raise UserError(f"{path}: not a readable {what} ({type(error).__name__}: {error})") from error
