"""`results.png`: the whole run on one page, one panel per number, one point per epoch.

Each number has a panel of its own, so no curve hides another; the two VOC/COCO mAP@0.5 definitions,
which often coincide, share a panel with different markers and line styles. Read from the first epoch:
every point has a marker, the x axis counts whole epochs, and the y axis starts at 0 for losses, the
learning rate and mAP, so one point does not sit alone on an axis of a hundredth.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ssd.evaluation.figures import pyplot, save_figure

# (title, [(key, label, style)], range): "zero" starts the axis at 0; "score" is 0 to at least 0.1 (a mAP of
# 0.001 must not fill its panel); "fraction" fits the data, padded, within 0..1.
SOLID = {"linestyle": "-", "marker": "o"}
PANELS = (
    ("loss (training mean)", [("loss", "loss", SOLID)], "zero"),
    ("localisation loss", [("loc_loss", "loc_loss", SOLID)], "zero"),
    ("classification loss", [("conf_loss", "conf_loss", SOLID)], "zero"),
    ("train_acc (of matched and mined boxes)", [("train_acc", "train_acc", SOLID)], "fraction"),
    ("learning rate (end of epoch)", [("lr", "lr", SOLID)], "zero"),
    ("val mAP (COCO, IoU 0.50:0.95)", [("mAP", "mAP", SOLID)], "score"),
    (
        "val mAP@0.5",
        [
            ("mAP50", "COCO mAP@0.5", SOLID),
            ("VOC_mAP50", "VOC mAP@0.5", {"linestyle": "--", "marker": "s", "markerfacecolor": "none"}),
        ],
        "score",
    ),
    ("val mAP@0.75 (COCO)", [("mAP75", "mAP@0.75", SOLID)], "score"),
)
BEST_OF = "mAP"  # the number best.pt is chosen by; its best epoch is marked in every mAP panel


def _points(history: Sequence[Mapping[str, Any]], key: str) -> list[tuple[int, float]]:
    points = [(int(row["epoch"]), row.get(key)) for row in history]
    return [(e, float(v)) for e, v in points if isinstance(v, (int, float)) and math.isfinite(v)]


def _y_range(values: list[float], kind: str) -> tuple[float, float]:
    top, bottom = max(values), min(values)
    # A little below 0, so a point at 0 shows its whole marker.
    if kind == "zero":
        upper = top * 1.15 if top > 0 else 1.0
        return -0.02 * upper, upper
    if kind == "score":
        upper = min(1.0, max(0.1, top * 1.15))
        return -0.02 * upper, upper
    pad = max(0.05, 0.1 * (top - bottom))
    return max(0.0, bottom - pad), min(1.0, top + pad)


def plot_results(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """results.png from the run's history (one row per epoch); None before the first epoch."""
    if not history:
        return None
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [int(row["epoch"]) for row in history]
    best = _points(history, BEST_OF)
    best_epoch = max(best, key=lambda point: point[1])[0] if best else None
    marker_size = 6 if len(epochs) <= 30 else 3
    figure, grid = plt.subplots(2, 4, figsize=(16, 7.5), dpi=100)
    for axes, (title, series, kind) in zip(grid.flat, PANELS, strict=True):
        values: list[float] = []
        for key, label, style in series:
            points = _points(history, key)
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            values += ys
            axes.plot(xs, ys, label=label, markersize=marker_size, linewidth=1.5, **style)
        if kind == "score" and best_epoch is not None:
            # A line, not a marker: it hides no point of any curve.
            axes.axvline(
                best_epoch,
                color="goldenrod",
                linestyle=":",
                linewidth=2,
                zorder=0.5,
                label=f"best mAP: epoch {best_epoch}",
            )
        if values:
            last = _points(history, series[0][0])
            axes.set_ylim(*_y_range(values, kind))
            axes.set_title(f"{title}\nlast {_number(last[-1][1])}" if last else title, fontsize=10)
            if len(series) > 1 or kind == "score":
                axes.legend(fontsize=8, loc="best")
        else:
            axes.set_title(title, fontsize=10)
            axes.text(
                0.5, 0.5, "not measured yet", ha="center", va="center", transform=axes.transAxes, color="grey"
            )
            axes.set_ylim(0, 1)
        axes.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        if max(epochs) - min(epochs) < 12:  # every epoch its tick, while they fit
            axes.set_xticks(range(min(epochs), max(epochs) + 1))
        else:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
    figure.suptitle(f"training run: {len(epochs)} epoch{'s' if len(epochs) != 1 else ''}", fontsize=12)
    figure.tight_layout()
    return save_figure(figure, path)


def _number(value: float) -> str:
    return f"{value:.2e}" if 0 < abs(value) < 1e-3 else f"{value:.4g}"
