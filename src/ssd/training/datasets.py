"""The pictures a run trains and validates on: which splits, loaded and checked before any work starts.

The splits follow the one rule of `ssd.data.splits`: named by meaning (`--train-split train` finds
`train2017`), else the training split and then a validation (or test) split of the dataset; a dataset without
splits is divided into "train" and "val" by `--val-fraction`. What was chosen is recorded in the checkpoint
(`split_record`), so that `ssd eval` of the run later takes the same pictures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ssd.data import SYNTHETIC, DetectionDataset, available_splits, build_dataset, is_automatically_split
from ssd.data.splits import SPLIT_SEED, default_training_split, default_validation_split, resolve_split
from ssd.errors import DatasetError
from ssd.training.options import TrainOptions

NO_VALIDATION = "none"


@dataclass
class TrainingData:
    train_set: DetectionDataset
    val_set: DetectionDataset | None  # None: no evaluation during training
    train_split: str
    val_split: str  # "none" when there is no validation set
    train_boxes: int  # boxes in the training split, crowd regions not counted
    automatic: bool = False  # the dataset has no splits: train and val were divided by `--val-fraction`
    # Per split, what `build_dataset` was given besides the split (synthetic sizes, image_root, max_pixels):
    # recorded so that `ssd eval` builds the very same pictures.
    split_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def split_record(self, options: TrainOptions) -> dict[str, Any]:
        """What a checkpoint keeps of the split, for `ssd eval` to validate on the same pictures."""
        return {
            "datapath": options.datapath,
            "train_split": self.train_split,
            "val_split": self.val_split,
            "automatic": self.automatic,
            "val_fraction": options.val_fraction,
            "split_seed": SPLIT_SEED,
            "split_options": self.split_options,
        }

    def split_note(self, options: TrainOptions) -> str | None:
        """The line announcing an automatic split, None for a dataset's own splits."""
        if not self.automatic:
            return None
        return (
            f"{options.datapath} has no splits of its own: {len(self.train_set)} pictures for training and "
            f"{len(self.val_set or [])} for validation, a fixed split ({options.val_fraction:g} for validation, "
            f"seed {SPLIT_SEED}; --val-fraction changes it), recorded in the checkpoint for `ssd eval`"
        )


def load_training_data(options: TrainOptions) -> TrainingData:
    """Both splits, their classes checked against each other; a training split without boxes is refused."""
    synthetic = options.datapath == SYNTHETIC
    splits = available_splits(options.datapath)
    where = str(options.datapath)
    if options.train_split is not None:
        train_split = resolve_split(options.train_split, splits, where)
    else:
        train_split = default_training_split(splits, where)
    load = dict(strict=options.strict_data, val_fraction=options.val_fraction, max_pixels=options.max_pixels)
    if options.image_root is not None:
        load["image_root"] = options.image_root
    extra: dict[str, Any] = {}
    if synthetic and options.synthetic_image_size:
        extra["image_size"] = options.synthetic_image_size
    train_options = dict(extra, num_images=options.synthetic_train) if synthetic else {}
    train_set = build_dataset(options.datapath, train_split, **load, **_without_none(train_options))
    recorded = _without_none({"image_root": options.image_root, "max_pixels": options.max_pixels})
    split_options = {train_split: dict(recorded, **_without_none(train_options))}
    if options.val_split == NO_VALIDATION:
        val_split = NO_VALIDATION
    elif options.val_split is not None:
        val_split = resolve_split(options.val_split, splits, where)
    else:
        val_split = default_validation_split(splits, train_split) or NO_VALIDATION
    val_set = None
    if val_split != NO_VALIDATION:
        val_options = dict(extra, num_images=options.synthetic_val) if synthetic else {}
        val_set = build_dataset(options.datapath, val_split, **load, **_without_none(val_options))
        split_options[val_split] = dict(recorded, **_without_none(val_options))
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
    automatic = not synthetic and is_automatically_split(options.datapath)
    return TrainingData(train_set, val_set, train_split, val_split, boxes, automatic, split_options)


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
