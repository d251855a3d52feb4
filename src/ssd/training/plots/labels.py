"""`labels.png`: what the training split holds, before any training: boxes per class, where and how large.

Sizes and centres are fractions of each picture's own width and height, so pictures of different sizes
share the axes. A split of many boxes is drawn from a fixed sample of them: the shape of a cloud of points
does not change past a few tens of thousands, and a scatter plot of a million points takes minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssd.evaluation.figures import pyplot, save_figure
from ssd.evaluation.palette import class_colour_float

MAX_POINTS = 20_000


def box_table(targets: Sequence[dict]) -> np.ndarray:
    """(N, 5): label, centre x, centre y, width, height, as fractions of the picture, crowd boxes left out."""
    rows = []
    for target in targets:
        boxes = np.asarray(target["boxes"], dtype=np.float64).reshape(-1, 4)
        if not len(boxes):
            continue
        height, width = (float(v) for v in target["orig_size"])
        labels = np.asarray(target["labels"]).reshape(-1)
        crowd = np.asarray(target.get("iscrowd", np.zeros(len(boxes))), dtype=bool).reshape(-1)
        boxes, labels = boxes[~crowd], labels[~crowd]
        rows.append(
            np.stack(
                [
                    labels,
                    (boxes[:, 0] + boxes[:, 2]) / 2 / width,
                    (boxes[:, 1] + boxes[:, 3]) / 2 / height,
                    (boxes[:, 2] - boxes[:, 0]) / width,
                    (boxes[:, 3] - boxes[:, 1]) / height,
                ],
                axis=1,
            )
        )
    return np.concatenate(rows) if rows else np.zeros((0, 5))


# Past this many classes, the scatter plots carry no legend and the bars no counts: they would not fit.
MAX_LEGEND_CLASSES = 12


def plot_labels(
    targets: Sequence[dict], class_names: Sequence[str], path: str | Path, split: str = "train"
) -> Path:
    """Four panels: boxes per class (bars), box centres, width against height, and both sizes' histograms."""
    plt = pyplot()
    table = box_table(targets)
    labels = table[:, 0].astype(np.int64)
    figure, axes = plt.subplots(2, 2, figsize=(11, 9), dpi=100)
    (bars, centres), (sizes, histogram) = axes
    figure.suptitle(
        f"labels of the '{split}' split: {len(table)} boxes in {len(targets)} pictures", fontsize=12
    )

    names = list(class_names)
    counts = np.bincount(labels, minlength=len(names) + 1)[1 : len(names) + 1]
    colours = [class_colour_float(k) for k in range(1, len(names) + 1)]
    positions = np.arange(len(names))
    bars.bar(positions, counts, color=colours, edgecolor="black", linewidth=0.5)
    many = len(names) > MAX_LEGEND_CLASSES
    if not many:  # counts written on the bars while they fit
        for x, count in zip(positions, counts, strict=True):
            bars.text(x, count, f"{count}", ha="center", va="bottom", fontsize=8)
    bars.set_xticks(
        positions,
        names,
        rotation=90 if many else 45 if len(names) > 6 else 0,
        ha="center" if many or len(names) <= 6 else "right",
        fontsize=max(4, 9 - len(names) // 20) if many else None,
    )
    bars.set(ylabel="boxes", title="boxes per class")
    bars.set_ylim(0, max(1, counts.max(initial=0)) * 1.12)

    sample = np.random.default_rng(0).permutation(len(table))[:MAX_POINTS]
    shown = table[sample]
    shown_colours = [class_colour_float(int(k)) for k in shown[:, 0]]
    point = float(np.clip(40.0 / np.sqrt(max(1, len(shown)) / 100), 2.0, 40.0))  # smaller as points crowd
    subset = "" if len(shown) == len(table) else f" ({len(shown)} of {len(table)} boxes)"
    centres.scatter(shown[:, 1], shown[:, 2], s=point, c=shown_colours, alpha=0.5, linewidths=0)
    centres.set(xlim=(0, 1), ylim=(1, 0), xlabel="x / picture width", ylabel="y / picture height")
    centres.set_title("box centres (as in the picture: top is 0)" + subset, fontsize=10)
    centres.set_aspect("equal")

    sizes.scatter(shown[:, 3], shown[:, 4], s=point, c=shown_colours, alpha=0.5, linewidths=0)
    sizes.set(xlim=(0, 1), ylim=(0, 1), xlabel="width / picture width", ylabel="height / picture height")
    sizes.set_title("box width and height" + subset, fontsize=10)
    sizes.set_aspect("equal")

    bins = np.linspace(0, 1, 41)
    histogram.hist(table[:, 3], bins=bins, alpha=0.6, label="width", color="tab:blue")
    histogram.hist(
        table[:, 4], bins=bins, alpha=0.6, label="height", color="tab:orange", histtype="step", linewidth=2
    )
    histogram.set(xlim=(0, 1), xlabel="fraction of the picture's side", ylabel="boxes", title="box sizes")

    handles = [plt.Line2D([], [], marker="s", linestyle="", color=c, markersize=8) for c in colours]
    for panel in (centres, sizes):
        panel.grid(alpha=0.3)
        if many:  # a legend of dozens of classes would hide the points: the bars name the colours
            panel.text(
                0.99,
                0.99,
                "colours: the classes' bars",
                transform=panel.transAxes,
                ha="right",
                va="top",
                fontsize=8,
                color="dimgrey",
            )
        else:
            panel.legend(handles, names, fontsize=7, loc="upper right", markerscale=0.8, framealpha=0.8)
    histogram.legend(fontsize=8)
    histogram.grid(alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, path)
