"""TensorBoard events of a run (when the tensorboard package is installed): one point per epoch and metric."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssd.errors import MissingExtraError, UserError, require_extra
from ssd.training.hooks.base import Hook
from ssd.training.hooks.metrics_log import COLUMNS

if TYPE_CHECKING:
    from ssd.training.trainer import Trainer


class TensorBoardLog(Hook):
    """Rank 0's events under `<run>/tensorboard/`. `wanted`: True needs the package, None uses it when
    installed, False never."""

    def __init__(self, run_dir: str | Path, wanted: bool | None):
        self.writer = _tensorboard_writer(Path(run_dir) / "tensorboard", wanted)

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key in COLUMNS[2:]:
            value = row.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, value, int(row["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _tensorboard_writer(folder: Path, wanted: bool | None):
    if wanted is False:
        return None
    try:
        require_extra("tensorboard", "tensorboard", "--tensorboard")
        from torch.utils.tensorboard import SummaryWriter
    except (MissingExtraError, ImportError) as error:
        if not wanted:
            return None  # the logs were not asked for: a run without them is fine
        if isinstance(error, MissingExtraError):
            raise
        raise UserError(f"--tensorboard: torch's TensorBoard writer does not import ({error})") from None
    return SummaryWriter(log_dir=str(folder))
