"""The pictures a run trains and validates on: which splits, loaded and checked before any work starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ssd.data import SYNTHETIC, DetectionDataset, available_splits, build_dataset
from ssd.errors import DatasetError
from ssd.training.options import TrainOptions

# The splits a run takes when none is named, in order of preference.
TRAIN_SPLITS = ("train", "trainval")
VAL_SPLITS = ("val", "valid", "test")


@dataclass
class TrainingData:
    train_set: DetectionDataset
    val_set: DetectionDataset | None  # None: no evaluation during training
    train_split: str
    val_split: str  # "none" when there is no validation set
    train_boxes: int  # boxes in the training split, crowd regions not counted


def load_training_data(options: TrainOptions) -> TrainingData:
    """Both splits, their classes checked against each other; a training split without boxes is refused."""
    synthetic = options.datapath == SYNTHETIC
    splits = available_splits(options.datapath)
    train_split = options.train_split or _first_present(TRAIN_SPLITS, splits, options.datapath)
    extra: dict[str, Any] = {}
    if synthetic and options.synthetic_image_size:
        extra["image_size"] = options.synthetic_image_size
    train_options = dict(extra, num_images=options.synthetic_train) if synthetic else {}
    train_set = build_dataset(
        options.datapath, train_split, strict=options.strict_data, **_without_none(train_options)
    )
    val_split = options.val_split
    if val_split is None:
        candidates = [s for s in VAL_SPLITS if s in splits and s != train_split]
        val_split = candidates[0] if candidates else "none"
    val_set = None
    if val_split != "none":
        val_options = dict(extra, num_images=options.synthetic_val) if synthetic else {}
        val_set = build_dataset(
            options.datapath, val_split, strict=options.strict_data, **_without_none(val_options)
        )
        if list(val_set.class_names) != list(train_set.class_names):
            raise DatasetError(
                f"{options.datapath}: split '{val_split}' has classes {val_set.class_names} but "
                f"'{train_split}' has {train_set.class_names}"
            )
    boxes = sum(int((~t["iscrowd"]).sum()) for t in train_set.targets)
    if boxes == 0:
        raise DatasetError(
            f"{options.datapath} (split '{train_split}'): {len(train_set)} pictures but no boxes at all; "
            "a detector cannot learn from it (check the annotations with `ssd data check`)"
        )
    return TrainingData(train_set, val_set, train_split, val_split, boxes)


def _first_present(wanted: tuple[str, ...], splits: list[str], path: str) -> str:
    for split in wanted:
        if split in splits:
            return split
    if len(splits) == 1:
        return splits[0]
    raise DatasetError(
        f"{path}: no '{wanted[0]}' split (splits found: {', '.join(splits) or 'none'}); choose one with --train-split"
    )


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
