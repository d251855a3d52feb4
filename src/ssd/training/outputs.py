"""Where a run writes, checked before any work: the run folder and `--save` can be made and written, and their
disks have room for the checkpoints; a killed run's temporary files are cleared when it resumes.

A run that would fail at its first checkpoint, an hour in, fails here in one line instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from torch import nn

from ssd.errors import UserError

# Optimiser state kept per parameter, in parameter-sized tensors (SGD's momentum; Adam's two moments).
OPTIMIZER_SLOTS = {"sgd": 1, "adamw": 2}


def make_writable_folder(folder: Path, setting: str) -> None:
    """Make `folder` (and its parents) and check a file can be written in it; `setting` names the option
    the folder comes from, for the error line."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(
            f"{setting}: cannot make the folder {folder}: a file of that name is in the way"
        ) from None
    except OSError as error:
        raise UserError(f"{setting}: cannot make the folder {folder}: {_reason(error)}") from None
    if not folder.is_dir():
        raise UserError(f"{setting}: {folder} is not a folder")
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".ssd-write-test.")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise UserError(f"{setting}: cannot write in {folder}: {_reason(error)}") from None


def check_save_path(save: str | None) -> None:
    """`--save FILE`: its folder is writable, and the path is not a folder itself."""
    if not save:
        return
    path = Path(save)
    if path.is_dir():
        raise UserError(f"--save {save}: is a folder; give the file to write, e.g. {path / 'ssd.pt'}")
    make_writable_folder(path.parent, f"--save {save}")


def checkpoint_bytes(model: nn.Module, ema: bool, optimizer: str) -> int:
    """About the size of one training checkpoint: the weights, their EMA copy and the optimiser's state."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    parameters = sum(p.numel() * p.element_size() for p in model.parameters())
    return weights * (2 if ema else 1) + parameters * OPTIMIZER_SLOTS.get(optimizer, 2)


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """`needed` bytes free on `folder`'s disk, or one line that says how much is missing."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UserError(
            f"{folder}: {_mb(free)} free, but {what} need about {_mb(needed)}; free some space or "
            "choose another folder (--project, --save)"
        )


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """The temporary files of checkpoint writes a killed run left in `run_dir` (`.last.pt.*.tmp`, ...)."""
    removed = []
    for path in run_dir.glob(".*.pt.*.tmp"):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def _mb(size: int) -> str:
    return f"{size / 1e6:,.0f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
