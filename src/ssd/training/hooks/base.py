"""The points of a run where the jobs around the training loop are called.

The trainer calls every hook at each point, in the order of its list; a hook overrides the points it needs.
`trainer` gives a hook the run's options, parts (`trainer.parts`) and state (`step`, `history`, `best_map`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ssd.training.epoch_metrics import EpochMeter
    from ssd.training.trainer import Trainer, TrainResult


@dataclass(frozen=True)
class BadStep:
    """An optimizer step skipped because its loss (or its gradient) was not finite."""

    step: int  # 1-based, as a person counts
    what: str  # "loss" or "gradient"
    loss: float
    targets: list[dict[str, Any]]  # the batch's targets, which name its pictures


class Hook:
    def before_run(self, trainer: Trainer) -> None:
        """After set-up, before the first epoch."""

    def before_epoch(self, trainer: Trainer, epoch: int) -> None:
        """`epoch` counts from 0."""

    def before_step(self, trainer: Trainer, images: Any, targets: list[dict[str, Any]]) -> None:
        """Before each step, with its batch as the loader gave it (augmented; on the CPU)."""

    def after_step(self, trainer: Trainer, meter: EpochMeter) -> None:
        """After each optimizer step that was taken; `meter` holds the epoch so far on this process."""

    def on_bad_step(self, trainer: Trainer, bad_step: BadStep) -> None:
        """After a step that was skipped."""

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        """`row` is the epoch's record (already the last entry of `trainer.history`); hooks may add to it."""

    def on_interrupt(self, trainer: Trainer, progress: dict[str, Any]) -> None:
        """After the step at which a signal stopped the run mid-epoch; `progress` is how far the epoch got
        (see `Trainer.epoch_progress`)."""

    def after_run(self, trainer: Trainer, result: TrainResult) -> None:
        """After the last epoch."""

    def close(self) -> None:
        """Release what the hook holds, however the run ended (called on every exit, errors included)."""
