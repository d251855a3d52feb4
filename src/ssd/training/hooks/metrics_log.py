"""The record of how a run learned: `results.csv` and its dashboard `results.png` (TensorBoard events:
`tensorboard.py`).

One row per epoch. The CSV is rewritten whole from the history every epoch, so a resumed run's file holds
exactly the epochs its checkpoint knows of, never a duplicate from the epoch that was interrupted.

The dashboard is drawn again when `REDRAW_SECONDS` have passed since its last drawing, after the last
epoch, and when a run ends or is interrupted: drawing it takes 1.5-2 s of a 2-core CPU (matplotlib), which
every epoch would add 7% to a BCCD run's 25-s epochs and half to a small dataset's.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssd.training.hooks.base import Hook
from ssd.training.plots.dashboard import plot_results

if TYPE_CHECKING:
    from ssd.training.trainer import Trainer

RESULTS_CSV = "results.csv"
RESULTS_PNG = "results.png"
REDRAW_SECONDS = 60.0
COLUMNS = (
    "epoch",
    "step",
    "lr",
    "loss",
    "loc_loss",
    "conf_loss",
    "train_acc",
    "bad_steps",
    "pictures_per_s",
    "train_seconds",
    "mAP",
    "mAP50",
    "mAP75",
    "VOC_mAP50",
    "eval_seconds",
)


class MetricsLog(Hook):
    """Rank 0's record of the run, rewritten after every epoch."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / RESULTS_CSV
        self._drawn: tuple[int, float] | None = None  # (history length, monotonic time) of the last drawing

    def write(self, history: Sequence[Mapping[str, Any]], draw: bool = True) -> None:
        """Rewrite results.csv from the whole history, and results.png with it when `draw`."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.csv_path.with_suffix(".csv.tmp")
        with open(temporary, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for row in history:
                writer.writerow({k: _csv_value(row.get(k)) for k in COLUMNS})
        temporary.replace(self.csv_path)
        if draw:
            plot_results(history, self.run_dir / RESULTS_PNG)
            self._drawn = (len(history), time.monotonic())

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        due = self._drawn is None or time.monotonic() - self._drawn[1] >= REDRAW_SECONDS
        self.write(trainer.history, draw=due or row.get("epoch") == trainer.options.epochs)

    def _draw_if_behind(self, trainer: Trainer) -> None:
        if trainer.history and (self._drawn is None or self._drawn[0] != len(trainer.history)):
            self.write(trainer.history)

    def on_interrupt(self, trainer: Trainer, progress: dict[str, Any]) -> None:
        self._draw_if_behind(trainer)

    def after_run(self, trainer: Trainer, result) -> None:
        self._draw_if_behind(trainer)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
