"""`--patience N`: stop when validation mAP has not improved for N evaluations in a row.

The count comes from the history alone (the rows that evaluated, after the best one), so a resumed run
counts on where it stopped. best.pt, written when mAP last improved, stays as it is; the trainer ends the
run after this epoch's checkpoint, which records why (a resume of it has nothing to do unless it is given a
new --patience), and says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ssd.training.hooks.base import Hook

if TYPE_CHECKING:
    from ssd.training.trainer import Trainer


def evaluations_without_improvement(history: Sequence[Mapping[str, Any]]) -> tuple[int, Mapping | None]:
    """How many evaluations came after the best mAP (the first epoch to reach it), and that epoch's row."""
    evaluated = [row for row in history if row.get("mAP") is not None]
    if not evaluated:
        return 0, None
    best = max(range(len(evaluated)), key=lambda i: (evaluated[i]["mAP"], -i))
    return len(evaluated) - 1 - best, evaluated[best]


def early_stop_reason(history: Sequence[Mapping[str, Any]], patience: int) -> str | None:
    """Why the run should stop now, or None; `patience` 0 never stops."""
    if patience <= 0:
        return None
    waited, best = evaluations_without_improvement(history)
    if waited < patience:
        return None
    return (
        f"validation mAP has not improved for {waited} evaluations (--patience {patience}); best mAP "
        f"{best['mAP']:.3f} at epoch {best['epoch']}, kept in best.pt"
    )


class EarlyStopping(Hook):
    """Rank 0 decides after each epoch's evaluation; the trainer shares the decision with every process."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        # After the last epoch the run ends anyway: that is not stopping early.
        if row.get("mAP") is not None and row["epoch"] < trainer.options.epochs:
            trainer.stop_reason = early_stop_reason(trainer.history, self.patience)
