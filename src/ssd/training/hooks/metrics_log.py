"""The record of how a run learned: `results.csv` and its dashboard `results.png` (TensorBoard events:
`tensorboard.py`).

One row per epoch. The CSV is rewritten whole from the history every epoch, so a resumed run's file holds
exactly the epochs its checkpoint knows of, never a duplicate from the epoch that was interrupted.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssd.training.hooks.base import Hook
from ssd.training.plots.dashboard import plot_results

if TYPE_CHECKING:
    from ssd.training.trainer import Trainer

RESULTS_CSV = "results.csv"
RESULTS_PNG = "results.png"
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

    def write(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Rewrite results.csv and results.png from the whole history."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.csv_path.with_suffix(".csv.tmp")
        with open(temporary, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for row in history:
                writer.writerow({k: _csv_value(row.get(k)) for k in COLUMNS})
        temporary.replace(self.csv_path)
        plot_results(history, self.run_dir / RESULTS_PNG)

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.write(trainer.history)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
