"""Which detections a caller keeps: a lowest score, some classes, at most so many per picture.

Shared by `ssd detect` and `ssd serve`, so both answer the same for the same picture and settings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ssd.errors import UserError


def resolve_classes(
    classes: Sequence[str], class_names: Sequence[str] | None, num_classes: int, setting: str = "--classes"
) -> set[int]:
    """Class names or labels 1..K (each value may hold several, comma-separated) to labels; one clear
    error, naming `setting`, for a value that is neither."""
    labels = set()
    names = {name: index + 1 for index, name in enumerate(class_names or [])}
    for value in classes:
        for item in (v.strip() for v in str(value).split(",") if v.strip()):
            if item in names:
                labels.add(names[item])
            elif item.isdigit() and 1 <= int(item) < num_classes:
                labels.add(int(item))
            else:
                known = ", ".join(class_names) if class_names else f"labels 1..{num_classes - 1}"
                raise UserError(f"{setting}: unknown class {item!r}; known: {known}")
    return labels


def select_detections(
    detections: dict[str, Tensor], score_threshold: float, labels: set[int] | None, max_detections: int
) -> dict[str, Tensor]:
    """The detections scoring at least `score_threshold`, of `labels` (None: all), the best `max_detections`."""
    keep = detections["result_scores"] >= score_threshold
    if labels is not None:
        keep &= torch.isin(detections["result_labels"], torch.tensor(sorted(labels)))
    # Detections come sorted by decreasing score, so the first `max_detections` kept are the best.
    index = keep.nonzero()[:, 0][:max_detections]
    return {key: value[index] for key, value in detections.items()}
