"""Continuing a stopped run: its checkpoint's options, with only where, how far and where to save changed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssd.errors import UserError
from ssd.models.checkpoint import read_checkpoint
from ssd.training.options import TrainOptions

LAST = "last.pt"  # written after every epoch; what `--resume RUN_FOLDER` continues from
# The options a resumed run may change; everything else continues as the run was set up.
RESUME_CHANGES = ("device", "workers", "epochs", "save", "patience", "save_period")


@dataclass
class ResumePoint:
    path: Path
    checkpoint: dict[str, Any]

    @property
    def epochs_done(self) -> int:
        return int(self.checkpoint["epoch"])


def read_resume(options: TrainOptions, changes: dict[str, Any]) -> tuple[TrainOptions, ResumePoint | None]:
    """The options to run with, and the checkpoint to continue from (None for a new run)."""
    if options.resume is None:
        return options, None
    path = Path(options.resume)
    if path.is_dir():
        path = path / LAST
    content = read_checkpoint(path)
    if "optimizer" not in content or "options" not in content:
        raise UserError(f"{path}: holds weights only, no training state to resume from (use --weights)")
    stored = TrainOptions.from_dict(content["options"], str(path))
    for name, value in changes.items():
        if name not in RESUME_CHANGES:
            raise UserError(
                f"--resume continues a run with its own options; only {', '.join(RESUME_CHANGES)} may "
                f"be given with it, not --{name.replace('_', '-')}"
            )
        if name == "epochs" and value < int(content["epoch"]):
            raise UserError(
                f"{path} has already trained {content['epoch']} epochs; --epochs {value} is fewer"
            )
        if name == "epochs" and value == int(content["epoch"]) and content.get("epoch_progress"):
            raise UserError(
                f"{path} stopped during epoch {int(content['epoch']) + 1}; --epochs {value} would drop it "
                f"(give at least {value + 1})"
            )
        setattr(stored, name, value)
    stored.resume = str(path)
    return stored, ResumePoint(path, content)
