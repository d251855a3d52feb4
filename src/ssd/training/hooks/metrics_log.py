"""The record of how a run learned: `metrics.csv` and PNG plots (TensorBoard events: `tensorboard.py`).

One row per epoch. The CSV is rewritten whole from the history every epoch, so a resumed run's file holds
exactly the epochs its checkpoint knows of, never a duplicate from the epoch that was interrupted.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssd.training.hooks.base import Hook

if TYPE_CHECKING:
    from ssd.training.trainer import Trainer

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
        self.csv_path = self.run_dir / "metrics.csv"

    def write(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Rewrite metrics.csv and the plots from the whole history."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.csv_path.with_suffix(".csv.tmp")
        with open(temporary, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for row in history:
                writer.writerow({k: _csv_value(row.get(k)) for k in COLUMNS})
        temporary.replace(self.csv_path)
        write_plots(history, self.run_dir)

    def after_epoch(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.write(trainer.history)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_plots(history: Sequence[Mapping[str, Any]], run_dir: str | Path) -> list[Path]:
    """loss.png (total, localisation, classification), lr.png and map.png, one point per epoch."""
    if not history:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    epochs = [row["epoch"] for row in history]
    figures = {
        "loss.png": ("loss per epoch (training mean)", ["loss", "loc_loss", "conf_loss"], False),
        "lr.png": ("learning rate at the end of each epoch", ["lr"], False),
        "map.png": ("validation mAP", ["mAP", "mAP50", "VOC_mAP50"], True),
    }
    written = []
    for file_name, (title, keys, bounded) in figures.items():
        figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
        for key in keys:
            points = [(e, row.get(key)) for e, row in zip(epochs, history, strict=True)]
            points = [(e, v) for e, v in points if isinstance(v, (int, float)) and math.isfinite(v)]
            if points:
                axes.plot(*zip(*points, strict=True), marker="o", markersize=3, label=key)
        axes.set_xlabel("epoch")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        if bounded:
            axes.set_ylim(0, 1)
        if axes.lines:
            axes.legend()
        figure.tight_layout()
        path = run_dir / file_name
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written
