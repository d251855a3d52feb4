"""What a `--weights` value (or `build_model(weights=...)`) means: a file, or a pretrained name to download.

A file that exists always wins, so a local file that happens to share a name is never shadowed. A name is
checked against the architecture before anything is downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ssd.errors import UserError
from ssd.models.weights.catalog import find_pretrained, unknown_weights_message
from ssd.models.weights.download import fetch_weights


def resolve_weights(
    text: str | Path, arch: str | None = None, base_url: str | None = None, progress: bool = True
) -> Path:
    """The weights file `text` stands for: an existing file as it is, or a pretrained name's checked file in
    torch's cache (downloaded the first time). `arch`, when known, must be one the named file is for."""
    path = Path(text)
    if path.is_file():
        return path
    if path.is_dir():  # never a pretrained name either
        inside = [path / name for name in ("best.pt", "last.pt") if (path / name).is_file()]
        hint = f"; did you mean {inside[0]}?" if inside else ""  # a run folder
        raise UserError(f"{path}: is a folder, not a weights file{hint}")
    entry = find_pretrained(text)
    if entry is None:
        raise UserError(unknown_weights_message(str(text)))
    if arch is not None:
        entry.check_fits(arch)
    return fetch_weights(entry, base_url, progress)


def weights_and_arch(text: str | Path, arch: str | None) -> tuple[Path, str | None]:
    """For the commands that read a model file: the file, and the architecture (a pretrained name says which,
    so `--arch` is needed only for a torchvision file of another name)."""
    entry = find_pretrained(text)
    if arch is None and entry is not None:
        arch = entry.archs[0]
    return resolve_weights(text, arch), arch


def pretrained_config_overrides(text: str | Path | None, arch: str) -> Mapping[str, Any]:
    """Config changes the model needs to take the pretrained file `text` names, e.g. MobileNetV3's full tail
    for its ImageNet file; none for our checkpoints, other files or another architecture."""
    entry = find_pretrained(text) if text is not None else None
    if entry is None or arch not in entry.archs:
        return {}
    return entry.config_overrides(arch)
