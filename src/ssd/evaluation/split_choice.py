"""Which split `ssd eval` evaluates when none is named: the one the checkpoint validated on, so that the
figures a run logged are measured again on the same pictures (`ssd.data.splits` has the rule itself)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ssd.data import available_splits, is_automatically_split
from ssd.data.splits import (
    SPLIT_SEED,
    VAL_FRACTION,
    WHOLE,
    default_validation_split,
    resolve_split,
)
from ssd.errors import DatasetError
from ssd.models.checkpoint import is_ssd_checkpoint
from ssd.models.model_files import WEIGHTS, model_file_kind
from ssd.models.weights.safe_load import load_pt_file


@dataclass(frozen=True)
class SplitChoice:
    split: str
    reason: str  # said to the user in one line
    val_fraction: float = VAL_FRACTION
    split_seed: int = SPLIT_SEED
    # What the run built this split with besides its name (synthetic sizes, image_root, max_pixels).
    dataset_options: dict[str, Any] = field(default_factory=dict)


def split_record(weights: str | Path | None) -> dict[str, Any] | None:
    """The `data` record of one of our checkpoints (None for other files, checkpoints without one, or no file)."""
    # An exported file keeps no record of its training data, and a model from no file has none either.
    if weights is None or model_file_kind(weights) != WEIGHTS:
        return None
    content = load_pt_file(Path(weights))
    record = content.get("data") if is_ssd_checkpoint(content) else None
    return record if isinstance(record, dict) else None


def _same_dataset(a: str | Path, b: str | Path) -> bool:
    if str(a) == str(b):
        return True
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


def split_to_evaluate(datapath: str, requested: str | None, weights: str | Path | None) -> SplitChoice:
    """The split to evaluate `weights` on (None: a model from no file, so no record) and why."""
    record = split_record(weights)
    same = record is not None and _same_dataset(record.get("datapath", ""), datapath)
    choice = _choose_split(datapath, requested, weights, record if same else None)
    built_with = record.get("split_options") if same else None
    if not isinstance(built_with, dict):  # a checkpoint from before splits recorded their options
        return choice
    options = built_with.get(choice.split)
    if options is None and requested is not None:  # `--split val` of a run that recorded `val2017`
        try:
            options = built_with.get(resolve_split(requested, available_splits(datapath), datapath))
        except DatasetError:
            options = None
    return replace(choice, dataset_options=dict(options)) if isinstance(options, dict) else choice


def _choose_split(
    datapath: str, requested: str | None, weights: str | Path | None, record: dict[str, Any] | None
) -> SplitChoice:
    """`record`: the checkpoint's split record when it is of this dataset, else None."""
    automatic = is_automatically_split(datapath)
    same = record is not None
    fraction = record.get("val_fraction", VAL_FRACTION) if same else VAL_FRACTION
    seed = record.get("split_seed", SPLIT_SEED) if same else SPLIT_SEED
    if requested is not None:  # of a dataset the run divided itself, divided the same way
        return SplitChoice(requested, "as asked (--split)", fraction, seed)
    splits = available_splits(datapath)
    name = Path(weights).name if weights is not None else ""
    if same:
        val_split = record.get("val_split")
        if record.get("automatic") and automatic and val_split in splits:
            return SplitChoice(
                val_split,
                f"the split {name} validated on (a fixed split: {fraction:g} for validation, seed {seed})",
                fraction,
                seed,
            )
        if not record.get("automatic") and val_split in splits:
            return SplitChoice(val_split, f"the split {name} validated on")
    if automatic:
        return SplitChoice(WHOLE, "the dataset has no splits and the weights no record of one: every picture")
    train_split = record.get("train_split", "") if record is not None else ""
    found = default_validation_split(splits, train_split or "")
    if found is not None:
        return SplitChoice(
            found, "the dataset's validation split" if "val" in found.lower() else "its test split"
        )
    if len(splits) == 1:
        return SplitChoice(resolve_split(splits[0], splits, datapath), "the dataset's only split")
    raise DatasetError(
        f"{datapath}: no validation or test split to evaluate (splits found: {', '.join(splits)}); name one with --split"
    )
